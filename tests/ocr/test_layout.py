"""Reading order of columns, tilted single lines and scripts the auto choice sends to tesseract."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from core.ocr import OcrOptions, ocr_image
from core.ocr.evaluate import cer
from core.ocr.scripts import order_lines
from core.ocr.types import OcrLine

from .conftest import font, need_tesseract, render_lines, rotate

LEFT = ["Rivers carry the rain from the hills", "down to the sea through the valley",
        "where the old mill still turns slowly", "beside the bridge built long ago."]
RIGHT = ["Markets open early in the square", "and traders call out their prices",
         "while children run between the stalls", "until the bells ring out at noon."]


def _line(text: str, x0: float, y0: float, x1: float, y1: float) -> OcrLine:
    return OcrLine(text, [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], 0.9)


def test_two_columns_are_read_column_by_column_with_the_caption_after():
    lines = [_line("Heading across the page", 300, 10, 900, 50)]
    for i, (a, b) in enumerate(zip(LEFT, RIGHT)):
        y = 100 + 50 * i
        lines += [_line(a, 20, y, 580, y + 40), _line(b, 640, y + 3, 1200, y + 43)]
    lines.append(_line("FIGURE ONE", 540, 300, 680, 330))  # a caption straddling the gutter
    ordered = [ln.text for ln in order_lines(lines)]
    assert ordered == ["Heading across the page", *LEFT, *RIGHT, "FIGURE ONE"]
    # right-to-left scripts read the right column first
    assert [ln.text for ln in order_lines(lines, rtl=True)][1:5] == RIGHT


def test_label_value_pairs_stay_on_their_rows():
    rows = [("Invoice number:", "INV-2041"), ("Date:", "3 March 2024"), ("Total:", "$ 120.00"),
            ("Tax:", "$ 20.00"), ("Subtotal:", "$ 100.00"), ("Due:", "on receipt")]
    lines = []
    for i, (k, v) in enumerate(rows):
        y = 40 * i
        lines += [_line(v, 400, y, 560, y + 30), _line(k, 20, y, 200, y + 30)]
    assert [ln.text for ln in order_lines(lines)] == [t for kv in rows for t in kv]


def test_two_column_page_read_by_rapidocr():
    f = font("latin", 20)
    img = Image.new("RGB", (900, 220), "white")
    d = ImageDraw.Draw(img)
    for i, (a, b) in enumerate(zip(LEFT, RIGHT)):
        d.text((20, 20 + 45 * i), a, fill="black", font=f)
        d.text((480, 20 + 45 * i), b, fill="black", font=f)
    page = ocr_image(np.array(img), OcrOptions(engine="rapidocr", tables=False))
    assert cer("\n".join(LEFT + RIGHT), page.text) < 0.03, page.text
    assert page.lines[0].text.startswith("Rivers") and page.lines[4].text.startswith("Markets"), page.text


def test_tilted_single_chinese_line_is_straightened():
    text = "我们今天去公园散步"
    img = render_lines([text], "cjk", 20, pad=4)
    for angle in (15, 45):
        page = ocr_image(rotate(img, angle), OcrOptions(engine="rapidocr"))
        assert "deskew" in page.preprocess.steps
        assert cer(text, page.text) < 0.15, (angle, page.text)


def test_cyrillic_auto_goes_to_tesseract():
    need_tesseract("rus", "osd")
    text = "Славянские языки большая семья"
    page = ocr_image(render_lines([text, "Москва и Киев стоят на реках"], "latin", 30), OcrOptions())
    assert page.engine == "tesseract" and page.script == "Cyrillic" and page.language == "ru"
    assert cer(text, page.lines[0].text) < 0.1, page.text


def test_mixed_english_and_chinese_with_a_joined_hint():
    from core.ocr.evaluate import reference_hint
    from core.ocr.scripts import normalise_lang

    assert normalise_lang("eng+chi_sim") == "en+zh" and normalise_lang("en, zh") == "en+zh"
    assert reference_hint("Hello world!你好世界") == "en+zh"
    need_tesseract("eng", "chi_sim")
    text = "Hello world 你好世界"
    page = ocr_image(render_lines([text], "cjk", 36, pad=12), OcrOptions(engine="tesseract", lang="en+zh"))
    assert cer(text, page.text) < 0.15, page.text


def test_tesseract_words_keep_english_spaces_beside_chinese():
    from core.ocr.engines import _join_words

    assert _join_words(["Hello", "world!", "你好", "世界"]) == "Hello world!你好世界"
    assert _join_words(["我是", "中国人"]) == "我是中国人"
