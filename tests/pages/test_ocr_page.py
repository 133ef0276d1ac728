"""pages/ocr.py driven headlessly: upload a rendered image, read it, check the text, tabs, boxes and exports."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.pages.conftest import download_bytes as _download_bytes
from tests.pages.conftest import page, wait_job
from tests.pages.media import text_image


def test_reads_an_image_and_exports_it(app_env: Path, media_files: dict[str, bytes]) -> None:
    at = AppTest.from_file(page("ocr"), default_timeout=90).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "OCR"
    png = text_image(["Quarterly report 2024", "Revenue grew by 42 percent"])
    at.file_uploader(key="ocr_upload").set_value(("report.png", png, "image/png")).run()
    assert not at.exception, at.exception
    at.button(key="ocr_run").click().run()
    wait_job("ocr:", timeout=90)
    at.run()
    assert not at.exception, at.exception
    summary = next(m.value for m in at.markdown if "lines**" in m.value)
    assert summary.startswith("**2 lines** on 1 page(s)")
    text = at.code[0].value
    assert "Quarterly report 2024" in text and "42 percent" in text
    assert "# " in at.code[1].value or "Quarterly" in at.code[1].value  # the Markdown tab
    assert [c.key for c in at.get("plotly_chart")] == ["ocr_boxes"]
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Text", "Markdown", "JSON", "CSV (tables, fields)", "Excel", "Searchable PDF", "HTML tables"]
    exported = _download_bytes(at, media_files, "ocr_dl_txt").decode()
    assert "Quarterly report 2024" in exported
    data = json.loads(_download_bytes(at, media_files, "ocr_dl_json"))
    assert data["name"] == "report.png" and len(data["pages"][0]["lines"]) == 2


def test_a_broken_image_is_refused_with_a_message(app_env: Path) -> None:
    at = AppTest.from_file(page("ocr"), default_timeout=60).run()
    at.file_uploader(key="ocr_upload").set_value(("broken.png", b"\x89PNG not really", "image/png")).run()
    assert not at.exception, at.exception
    assert any("broken.png cannot be read" in e.value for e in at.error)
