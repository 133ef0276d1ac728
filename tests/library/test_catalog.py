"""The library catalog on a real cache: record, stages and sizes, search in OCR text, export, delete."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from core.cache import ResultCache
from core.files import store_upload
from core.library import delete_item, export_item, list_items, record_file, search_items
from core.ocr.pipeline import OcrOptions, run_ocr
from tests.pages.media import text_image


def test_record_search_export_delete(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    img = store_upload(io.BytesIO(text_image(["Harbour lights at dusk"])), "photo.png", tmp_path / "cache", 10**7)
    first = record_file(cache, img.sha256, img.name, img.kind, img.path, img.size_bytes)
    again = record_file(cache, img.sha256, img.name, img.kind, img.path, img.size_bytes)
    assert first.added_at == again.added_at and again.stages == [] and again.available
    run_ocr(img.path, OcrOptions(), name=img.name, cache=cache)
    [item] = list_items(cache)
    assert item.stages == ["OCR"] and item.cache_bytes > 0 and item.kind == "image"
    [hit] = search_items(cache, "LIGHTS")
    assert not hit.in_name and "Harbour lights at dusk" in hit.snippets[0]
    assert search_items(cache, "lights", in_text=False) == []
    assert search_items(cache, "photo")[0].in_name
    zf = zipfile.ZipFile(io.BytesIO(export_item(cache, img.sha256)))
    assert "Harbour lights" in zf.read("ocr.txt").decode() and json.loads(zf.read("item.json"))["name"] == "photo.png"
    assert delete_item(cache, img.sha256, tmp_path / "cache") >= 3
    assert list_items(cache) == [] and not Path(img.path).exists()
