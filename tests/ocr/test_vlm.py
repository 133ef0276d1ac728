"""The Qwen3-VL OCR engine's plumbing on the tiny random model: noise becomes a clear empty result."""

from __future__ import annotations

import numpy as np

from core.ocr.vlm import VlmOcrEngine, parse_boxes, parse_html_tables, usable


def test_box_parsing_maps_relative_coordinates():
    text = 'ok ```json\n[{"bbox_2d": [100, 200, 500, 300], "text_content": "Hello"}, {"bbox_2d": "x"}]\n```'
    lines = parse_boxes(text, 2000, 1000)
    assert len(lines) == 1 and lines[0].text == "Hello"
    assert lines[0].box[0] == [200.0, 200.0] and lines[0].box[2] == [1000.0, 300.0]
    assert parse_boxes("no json here", 10, 10) == []


def test_html_tables_parsed():
    t = parse_html_tables("<table><tr><th>A</th><th colspan=2>B</th></tr><tr><td>1 &amp; 2</td><td>3</td>"
                          "<td>4</td></tr></table>")
    assert t[0].rows == [["A", "B", ""], ["1 & 2", "3", "4"]]
    assert not usable("a a a a a a a a a a") and usable("Hello world")
    assert not usable("kes\ufffd\ufffd experim\x0e Descril")


def test_tiny_model_noise_is_an_empty_result(tiny_engine):
    eng = VlmOcrEngine(engine=tiny_engine, max_new_tokens=24)
    img = np.full((64, 96, 3), 255, np.uint8)
    for mode in ("boxes", "text"):
        out = eng.read(img, mode=mode)
        assert out.engine == "vlm"
        assert out.lines == [] and "not usable" in out.warnings[-1]
