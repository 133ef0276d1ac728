"""pages/ocr.py driven headlessly: upload a rendered image, read it, check the text, tabs, boxes and exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.pages.conftest import page, wait_job
from tests.pages.media import text_image


@pytest.fixture
def media_files(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Every file the pages hand to Streamlit's media store (downloads), by file id."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stored: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def load_and_get_id(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        if isinstance(path_or_data, bytes):
            stored[file_id] = path_or_data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", load_and_get_id)
    return stored


def _download_bytes(at: AppTest, media: dict[str, bytes], key: str) -> bytes:
    button = next(b for b in at.get("download_button") if b.proto.id.endswith(key))
    name = button.proto.url.rsplit("/", 1)[1]
    return next(data for file_id, data in media.items() if name.startswith(file_id))


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
