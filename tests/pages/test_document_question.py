"""The OCR page's question box: without the model it explains; with the tiny model it answers and draws nothing
it cannot parse; the model's 0-1000 boxes are drawn on the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.pages.conftest import page
from tests.pages.media import text_image


def test_without_model_the_box_explains(app_env: Path) -> None:
    at = AppTest.from_file(page("ocr"), default_timeout=90).run()
    png = text_image(["Invoice 4711", "Total 99.50 EUR"])
    at.file_uploader(key="ocr_upload").set_value(("invoice.png", png, "image/png")).run()
    assert not at.exception, at.exception
    assert any("Questions about documents need the model" in w.value for w in at.warning)
    assert not any(b.key == "doc_ask" for b in at.button)


def test_with_the_tiny_model_it_answers(app_env: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    monkeypatch.setenv("VLSCOPE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("VLSCOPE_MAX_NEW_TOKENS", "8")
    at = AppTest.from_file(page("ocr"), default_timeout=120).run()
    png = text_image(["Invoice 4711", "Total 99.50 EUR"])
    at.file_uploader(key="ocr_upload").set_value(("invoice.png", png, "image/png")).run()
    at.text_input(key="doc_question").input("What is the total?").run()
    at.toggle(key="doc_ocr").set_value(True).run()
    at.button(key="doc_ask").click().run()
    assert not at.exception, at.exception
    assert any(m.value == "**Answer**" for m in at.markdown)
    meta = " ".join(c.value for c in at.caption)
    assert "characters of OCR text given as context" in meta and "pages 1" in meta
    assert at.text[-1].value  # the answer text (noise from the tiny model), shown as plain text
