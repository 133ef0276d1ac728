"""pages/library.py driven headlessly: files analysed earlier are listed, found by name and by text, opened from
the cache, exported and deleted."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.pages.conftest import download_bytes, page
from tests.pages.media import text_image


def _fill_library(tmp: Path, video_bytes: bytes) -> tuple[str, str]:
    """Analyse a video (scenes) and OCR an image into the app's cache, as the other pages do."""
    from core.analysis.video_pipeline import analyze_video
    from core.files import store_upload
    from core.library import record_file
    from core.ocr.pipeline import OcrOptions, run_ocr
    from ui.state import get_cache, get_settings

    cache, settings = get_cache(), get_settings()
    video = store_upload(io.BytesIO(video_bytes), "three-shots.mp4", settings.cache_dir, 10**8)
    record_file(cache, video.sha256, video.name, video.kind, video.path, video.size_bytes)
    analyze_video(video.path, stages=("scenes",), cache=cache, input_hash=video.sha256)
    image = store_upload(io.BytesIO(text_image(["Invoice from Acme", "Payment due in March"])), "acme.png",
                         settings.cache_dir, 10**8)
    record_file(cache, image.sha256, image.name, image.kind, image.path, image.size_bytes)
    run_ocr(image.path, OcrOptions(), name=image.name, cache=cache)
    return video.sha256, image.sha256


def test_list_search_open_export_delete(app_env: Path, video_bytes: bytes, media_files: dict[str, bytes]) -> None:
    at = AppTest.from_file(page("library"), default_timeout=60).run()
    assert any("library is empty" in i.value for i in at.info)
    video_hash, image_hash = _fill_library(app_env, video_bytes)
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert sorted(table["Name"]) == ["acme.png", "three-shots.mp4"]
    video_row = table[table["Name"] == "three-shots.mp4"].iloc[0]
    assert video_row["Kind"] == "video" and "scene cuts" in video_row["Stages done"]
    assert str(video_row["Preview"]).startswith("data:image/jpeg;base64,")

    at.text_input(key="lib_query").input("payment due").run()  # words read by OCR, not in any name
    assert list(at.dataframe[0].value["Name"]) == ["acme.png"]
    assert "Payment due in March" in at.dataframe[0].value["Found in"].iloc[0]
    at.text_input(key="lib_query").input("three-shots").run()
    assert list(at.dataframe[0].value["Name"]) == ["three-shots.mp4"]

    at.selectbox(key="lib_open").set_value(video_hash).run()
    assert not at.exception, at.exception
    assert any(m.value == "**Events** · Scenes (shots): 3" for m in at.markdown)
    archive = zipfile.ZipFile(io.BytesIO(download_bytes(at, media_files, "lib_export")))
    assert {"item.json", "events.json", "thumbnail.jpg"} <= set(archive.namelist())
    assert len(json.loads(archive.read("events.json"))) == 3

    at.button(key="lib_delete").click().run()
    assert not at.exception, at.exception
    at.text_input(key="lib_query").input("").run()
    assert list(at.dataframe[0].value["Name"]) == ["acme.png"]
    assert not list((app_env / "cache" / "uploads").glob(f"{video_hash}*"))
