"""Never worse than the engine underneath: the plain engine's reading (its layout mode chosen from the image)
is a candidate, large-type lines are read at the size the engine reads best, marks stay on their line, the
script detector sees script and not noise, small word crops are read. Real engines on images rendered here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.ocr import OcrOptions, ocr_image
from core.ocr.eval_reading import plain_reading
from core.ocr.evaluate import cer
from core.ocr.preprocess import analyse_layout
from core.ocr.scripts import char_script, drop_foreign_tokens, merge_mark_lines, strip_direction_marks
from core.ocr.types import OcrLine
from .conftest import ENGLISH, font, need_tesseract, render_lines

ARABIC = "ذَهَبَ الطَّالِبُ إِلَى الْمَدْرَسَةِ صَبَاحًا"  # with harakat: fatha, shadda, damma, kasra, sukun, tanwin


def word_crop(text: str, height: int) -> np.ndarray:
    """A word cut tight around its ink (a margin of one pixel), `height` pixels high."""
    f = font("latin", int(height * 0.8))
    left, top, right, bottom = f.getbbox(text)
    img = Image.new("RGB", (right - left + 2, height), "white")
    ImageDraw.Draw(img).text((1 - left, (height - (bottom - top)) // 2 - top), text, fill="black", font=f)
    return np.array(img)


@pytest.mark.parametrize("size", [60, 90])
def test_arabic_line_with_diacritics_is_one_line_and_no_worse_than_plain_tesseract(size):
    need_tesseract("ara")
    img = render_lines([ARABIC], "arabic", size, pad=10, direction="rtl")
    page = ocr_image(img, OcrOptions(lang="ar", tables=False))
    plain = plain_reading(img, "Arabic")  # tesseract -l ara --psm 7, the mode of a one-line image
    assert len(page.lines) == 1 and page.script == "Arabic", page.text
    assert cer(ARABIC, page.text) <= cer(ARABIC, plain), (page.text, plain)
    assert cer(ARABIC, page.text) < 0.2, page.text


def test_arabic_without_a_hint_has_no_devanagari_and_no_direction_marks():
    need_tesseract("ara", "hin")
    text = "وصل القطار في الساعة 10 صباحا يوم 3 مايو"
    page = ocr_image(render_lines([text], "arabic", 40, direction="rtl"), OcrOptions(tables=False))
    assert page.script == "Arabic" and page.engine == "tesseract"
    assert not [ch for ch in page.text if char_script(ch) == "Devanagari" or "\u0966" <= ch <= "\u096f"], page.text
    assert "\u200e" not in page.text and "\u200f" not in page.text
    assert cer(text, page.text) < 0.15, page.text


def tight_line(text: str, kind: str, size: int, margin: int = 4, direction: str | None = None) -> np.ndarray:
    """A printed line cut close around its ink (`margin` pixels of paper), as line sets are."""
    f = font(kind, size)
    kw = {"direction": direction} if direction else {}
    left, top, right, bottom = f.getbbox(text, **kw)
    img = Image.new("RGB", (right - left + 2 * margin, bottom - top + 2 * margin), "white")
    ImageDraw.Draw(img).text((margin - left, margin - top), text, fill="black", font=f, **kw)
    return np.array(img)


SANSKRIT = ["अन्योऽन्यच्छृणुयादन्योऽन्यन्मन्वीता", "तल्लिङ्गैरर्चयेन्मन्त्रैः सर्वदेवान्नमस्य"]


@pytest.mark.parametrize("text", SANSKRIT)
def test_devanagari_line_without_a_hint_is_devanagari_and_no_worse_than_plain_tesseract(text):
    # RapidOCR reads such a line as confident-looking Latin, Cyrillic or Arabic noise ("3TSS-H-"): the script is
    # found by reading it with each script's pack, not taken from RapidOCR's guess or a mixed pack
    need_tesseract("san", "hin", "ara", "rus")
    img = tight_line(text, "devanagari", 40)
    page = ocr_image(img, OcrOptions(tables=False))
    plain = plain_reading(img, "Devanagari")  # tesseract -l san+hin --psm 7, the mode of a one-line image
    assert page.script == "Devanagari" and page.engine == "tesseract", page.text
    assert cer(text, page.text) <= cer(text, plain) + 0.01, (page.text, plain)
    assert cer(text, page.text) < 0.1, page.text


def test_hinted_devanagari_line_is_the_plain_engine_reading():
    # a clean line tesseract reads as it is: VLScope gives that reading, not a more confident but worse one of a
    # copy with a border of paper (which read "तल्लिङ्खैर्चयेन्मन्तरैः" for "तल्लिङ्गैरर्चयेन्मन्त्रैः")
    need_tesseract("san", "hin")
    img = tight_line(SANSKRIT[1], "devanagari", 40)
    page = ocr_image(img, OcrOptions(lang="sa", tables=False))
    assert page.text == plain_reading(img, "Devanagari")
    assert page.preprocess.details["reading"] == "plain" and "variant" not in page.preprocess.details


@pytest.mark.parametrize("size", [80, 110])
def test_large_arabic_line_where_tesseract_finds_no_line_is_read(size):
    # tesseract's line finder drops some large-type lines whole (--psm 7 gives nothing): raw-line mode reads them
    need_tesseract("ara", "hin", "rus")
    text = "فقال أحضروني الرأي فاجتمع ملؤهم"
    img = tight_line(text, "arabic_sans", size, direction="rtl")
    for lang in ("ar", None):
        page = ocr_image(img, OcrOptions(lang=lang, tables=False))
        assert page.script == "Arabic" and len(page.lines) == 1, page.text
        assert cer(text, page.text) <= min(0.05, cer(text, plain_reading(img, "Arabic"))), page.text


@pytest.mark.parametrize("word", ["Invoice", "Total", "Street"])
def test_latin_word_crop_is_read_as_latin(word):
    page = ocr_image(word_crop(word, 22), OcrOptions(tables=False))
    assert page.script == "Latin" and page.text == word, page.text


@pytest.mark.parametrize("height", [17, 20, 24, 30])
def test_small_tight_word_crop_is_read_by_tesseract(height):
    need_tesseract("eng")
    # a tight crop: tesseract alone returns nothing for most of these (the border of paper is what it needs)
    page = ocr_image(word_crop("Payment", height), OcrOptions(engine="tesseract", lang="en", tables=False))
    assert page.text == "Payment"


def test_twenty_pixel_word_crop_is_read_in_auto():
    page = ocr_image(word_crop("Amount", 20), OcrOptions(tables=False))
    assert page.text == "Amount"


def test_clean_english_block_is_the_plain_reading():
    page = ocr_image(render_lines(ENGLISH), OcrOptions(engine="rapidocr", tables=False))
    assert [ln.text for ln in page.lines] == ENGLISH
    assert page.preprocess.details["reading"] == "plain" and page.preprocess.details["layout"] == "block"


def test_layout_mode_is_chosen_from_the_ink():
    line = render_lines([ENGLISH[0]])
    block = render_lines(ENGLISH)
    assert (analyse_layout(line).mode, analyse_layout(line).psm) == ("line", "7")
    assert (analyse_layout(block).mode, analyse_layout(block).psm) == ("block", "6")
    assert analyse_layout(np.full((80, 300, 3), 255, np.uint8)).mode == "empty"


def test_script_noise_is_dropped_and_marks_join_their_line():
    assert strip_direction_marks("الساعة 10\u200f صباحا") == "الساعة 10 صباحا"
    # Devanagari digits read out of dots inside Arabic text are dropped; Latin and ASCII digits stay
    assert drop_foreign_tokens("جبل كانت ५५% الوقعة (1) PDF", "Arabic") == "جبل كانت الوقعة (1) PDF"
    assert drop_foreign_tokens("जबल ५५ कानत", "Devanagari") == "जबल ५५ कानत"
    assert drop_foreign_tokens("ज ५५ كانت", "Arabic", hint="ar+hi") == "ज ५५ كانت"

    def box(x0, y0, x1, y1):
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]

    main = OcrLine("وقرأ الكتاب في المكتبة", box(10, 40, 400, 80), 0.9)
    dots = OcrLine("َ ُ", box(120, 28, 200, 38), 0.3)  # harakat above the line, read as a line of their own
    second = OcrLine("ذهب الطالب", box(10, 120, 300, 160), 0.9)
    merged = merge_mark_lines([main, dots, second])
    assert [ln.text for ln in merged] == ["وقرأ الكتاب في المكتبة", "ذهب الطالب"]
    assert merged[0].bounds == (10, 28, 400, 80)
