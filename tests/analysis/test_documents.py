"""Questions about images and PDF pages: boxes in 0-1000 coordinates mapped to pixels, OCR context."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from core.analysis.documents import ask_document, draw_boxes, parse_boxes, relative_to_pixels


def test_relative_to_pixels() -> None:
    assert relative_to_pixels([100, 200, 500, 1000], 2000, 1000) == (200.0, 200.0, 1000.0, 1000.0)
    assert relative_to_pixels([600, 900, 100, 1200], 1000, 500) == (100.0, 450.0, 600.0, 500.0)  # ordered, clamped


def test_parse_boxes_from_json_and_prose() -> None:
    text = '```json\n[{"bbox_2d": [100, 100, 300, 200], "label": "Submit button"}, {"bbox_2d": [0, 0, 10]}]\n```'
    boxes = parse_boxes(text, [(800, 600)])
    assert [(b.x1, b.y1, b.x2, b.y2, b.label) for b in boxes] == [(80, 60, 240, 120, "Submit button")]
    prose = parse_boxes("The logo is at [500, 0, 1000, 250].", [(400, 400)])
    assert [(b.x1, b.y1, b.x2, b.y2) for b in prose] == [(200, 0, 400, 100)]
    assert parse_boxes("no boxes here", [(10, 10)]) == []
    paged = parse_boxes('[{"bbox_2d": [0, 0, 500, 500], "page": 2}]', [(100, 100), (200, 200)])
    assert paged[0].page == 1 and paged[0].x2 == 100


def test_draw_boxes_marks_pixels() -> None:
    image = np.full((100, 100, 3), 255, np.uint8)
    boxes = parse_boxes('[{"bbox_2d": [100, 100, 500, 500]}]', [(100, 100)])
    out = draw_boxes(image, boxes)
    assert tuple(out[10, 30]) == (230, 30, 30) and tuple(out[80, 80]) == (255, 255, 255)
    assert image[10, 30].tolist() == [255, 255, 255]  # the original is untouched


@pytest.fixture
def invoice(tmp_path: Path) -> Path:
    font = next((p for p in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",) if Path(p).exists()), None)
    if font is None:
        pytest.skip("DejaVu font missing: apt-get install fonts-dejavu-core")
    image = Image.new("RGB", (900, 300), "white")
    ImageDraw.Draw(image).text((40, 100), "INVOICE 4711 TOTAL 99.50 EUR", fill="black",
                               font=ImageFont.truetype(font, 40))
    path = tmp_path / "invoice.png"
    image.save(path)
    return path


def test_ocr_switch_gives_the_text_to_the_model(tiny_engine, invoice: Path) -> None:
    from core.vlm import GenerationParams

    result = ask_document(tiny_engine, invoice, "What is the total?", ocr=True,
                          params=GenerationParams.greedy_defaults(4))
    assert result.ocr_used and result.ocr_chars >= 20
    prompt = tiny_engine.ledger.records()[-1]
    assert prompt.kind == "document-qa" and prompt.prompt_tokens > 40  # the OCR text is in the prompt
    plain = ask_document(tiny_engine, invoice, "What is the total?", params=GenerationParams.greedy_defaults(4))
    assert not plain.ocr_used and tiny_engine.ledger.records()[-1].prompt_tokens < prompt.prompt_tokens
