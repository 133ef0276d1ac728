"""Real engines read rendered images: English, Chinese, vertical Chinese, Arabic, Devanagari,
rotated, tilted, dimmed and noised copies."""

from __future__ import annotations

import pytest

from core.ocr import OcrOptions, ocr_image
from core.ocr.evaluate import cer
from .conftest import ENGLISH, dim, need_tesseract, noisy, render_lines, render_vertical, rotate

ENGLISH_TEXT = "\n".join(ENGLISH)


def test_rapidocr_reads_english(english_page):
    page = ocr_image(english_page, OcrOptions(engine="rapidocr"))
    assert cer(ENGLISH_TEXT, page.text) < 0.02, page.text
    assert page.engine == "rapidocr" and page.script == "Latin"
    assert all(0 < ln.confidence <= 1 and len(ln.box) == 4 for ln in page.lines)
    assert [ln.text[:5] for ln in page.lines] == [t[:5] for t in ENGLISH]  # reading order


def test_tesseract_reads_english(english_page):
    need_tesseract("eng")
    page = ocr_image(english_page, OcrOptions(engine="tesseract", lang="en"))
    assert page.engine == "tesseract"
    assert cer(ENGLISH_TEXT, page.text) < 0.03, page.text


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_orientation_found_and_corrected(english_page, turn):
    page = ocr_image(rotate(english_page, -turn), OcrOptions(engine="rapidocr"))  # turned clockwise by `turn`
    assert page.preprocess.orientation == (360 - turn) % 360
    assert cer(ENGLISH_TEXT, page.text) < 0.03, page.text


@pytest.mark.parametrize("angle", [5, 15, 30, 45])
def test_deskew_up_to_45_degrees(english_page, angle):
    page = ocr_image(rotate(english_page, angle), OcrOptions(engine="rapidocr"))
    assert "deskew" in page.preprocess.steps
    assert cer(ENGLISH_TEXT, page.text) < 0.05, page.text
    # boxes are mapped back onto the tilted original: the first line's box is itself tilted
    (x0, y0), (x1, y1) = page.lines[0].box[0], page.lines[0].box[1]
    assert abs(y1 - y0) > 0.05 * abs(x1 - x0)


def test_low_light_and_noise(english_page):
    dark = ocr_image(dim(english_page, 0.2), OcrOptions(engine="rapidocr"))
    assert "gamma" in dark.preprocess.steps or "contrast" in dark.preprocess.steps
    assert cer(ENGLISH_TEXT, dark.text) < 0.03, dark.text
    grainy = ocr_image(noisy(english_page, 30), OcrOptions(engine="rapidocr"))
    assert cer(ENGLISH_TEXT, grainy.text) < 0.05, grainy.text


def test_chinese_with_rapidocr():
    lines = ["我是中国人", "今天天气很好"]
    page = ocr_image(render_lines(lines, "cjk", 36), OcrOptions())
    assert page.script == "Han" and page.language == "zh"
    assert cer("".join(lines), page.text.replace("\n", "")) < 0.05, page.text


def test_vertical_chinese_columns_right_to_left():
    cols = ["春眠不覺曉", "處處聞啼鳥", "夜來風雨聲"]
    img = render_vertical(cols)
    page = ocr_image(img, OcrOptions(engine="rapidocr", vertical="auto"))
    assert page.vertical
    assert cer("".join(cols), "".join(ln.text for ln in page.lines)) < 0.15, page.text
    assert page.lines[0].text[:2] == cols[0][:2]  # rightmost column first


def test_vertical_forced_with_tesseract():
    need_tesseract("chi_tra_vert")
    cols = ["春眠不覺曉", "處處聞啼鳥"]
    page = ocr_image(render_vertical(cols, size=40), OcrOptions(engine="tesseract", lang="zh-tw", vertical="on"))
    assert page.vertical
    # tesseract's vertical models misread some rare characters; the columns and their order must hold
    assert cer("".join(cols), "".join(ln.text for ln in page.lines)) < 0.5, page.text
    assert page.lines[0].text[0] == cols[0][0] and page.lines[-1].text[0] == cols[-1][0]


def test_arabic_auto_picks_tesseract():
    need_tesseract("ara", "osd")
    text = "مرحبا بالعالم الجميل"
    img = render_lines([text], "arabic", 40, direction="rtl")
    page = ocr_image(img, OcrOptions())
    assert page.engine == "tesseract" and page.script == "Arabic"
    assert cer(text, page.text) < 0.15, page.text


def test_devanagari_with_hint():
    need_tesseract("hin")
    text = "आज मौसम अच्छा है"
    page = ocr_image(render_lines([text], "devanagari", 40), OcrOptions(lang="hi"))
    assert page.engine == "tesseract" and page.script == "Devanagari"
    assert cer(text, page.text) < 0.1, page.text


def test_enhanced_mode_reads_small_text():
    img = render_lines(["Small print still counts 2024"], "latin", 11, pad=6)
    page = ocr_image(img, OcrOptions(enhanced=True))
    assert cer("Small print still counts 2024", page.text) < 0.1, page.text
