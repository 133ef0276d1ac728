"""Defect 8 of issue 16 in the catalog: a failed upload is not a library item, and every stage has a plain name.
(The page's side, the links, the player and the confirmation after Delete: tests/pages/test_library_page.py.)"""

from __future__ import annotations

import io
from pathlib import Path

from core.analysis.video_pipeline import PartialText
from core.app.video import storyboard_key
from core.cache import ResultCache, make_key
from core.files import store_upload
from core.library import list_items, record_file, stage_label
from core.library.catalog import STAGE_LABELS, stage_labels
from core.library.index import LibraryIndex
from core.media.text import TextReading
from tests.pages.media import text_image


def test_a_failed_upload_is_not_an_item(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    broken = store_upload(io.BytesIO(b"not a video at all" * 100), "broken.mp4", tmp_path / "cache", 10**7)
    item = record_file(cache, broken.sha256, broken.name, broken.kind, broken.path, broken.size_bytes)
    assert item.name == "broken.mp4"  # recorded (the Video page says why it cannot be used)...
    assert list_items(cache) == []  # ...but not an item of the library: before, "broken.mp4", no preview, "none yet"
    assert LibraryIndex(cache, tmp_path / "cache").items() == ([], 0)

    fine = store_upload(io.BytesIO(text_image(["Opened, not read yet"])), "fresh.png", tmp_path / "cache", 10**7)
    record_file(cache, fine.sha256, fine.name, fine.kind, fine.path, fine.size_bytes)
    assert [(i.name, i.stages) for i in list_items(cache)] == [("fresh.png", [])]  # readable: listed at once
    items, total = LibraryIndex(cache, tmp_path / "cache").items()
    assert total == 1 and [(i.name, i.stages) for i in items] == [("fresh.png", [])]

    # the broken file becomes an item once something was computed from it (e.g. by another tool)
    cache.put_json(make_key(broken.sha256, "video.probe", {}), {"duration": 1.0})
    assert {i.name for i in list_items(cache)} == {"broken.mp4", "fresh.png"}
    assert {i.name for i in LibraryIndex(cache, tmp_path / "cache").items()[0]} == {"broken.mp4", "fresh.png"}


def test_stage_names_are_plain_words(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    sha = "ab" * 32
    cache.put_json(make_key(sha, "library.file", {}), {"name": "talk.mp4", "kind": "video", "path": "",
                                                       "size_bytes": 1, "added_at": 1.0, "readable": True})
    cache.put_json(storyboard_key(sha), {"times": [], "images": []})  # as the Video page stores it
    partial = PartialText(cache, sha)  # an on-screen text pass stopped half way
    partial.add(TextReading(1.0, 0, [{"text": "EXIT", "score": 0.9}], True))
    partial.flush()
    [item] = list_items(cache)
    assert item.stages == ["On-screen text (part of the video)", "Storyboard"]  # before: video.storyboard, ...(partial)
    [indexed] = LibraryIndex(cache, tmp_path / "cache").items()[0]
    assert indexed.stages == item.stages
    for stage, label in STAGE_LABELS.items():
        assert label[0].isupper() and "." not in label and "_" not in label, (stage, label)
    assert stage_label("video.colour-map") == "Video colour map"  # a stage added later still reads as words
    assert stage_labels(["vlm-features", "vlm-features-part", "library.thumb", "ocr-page"]) == [
        "Visual memory (for questions)", "OCR"]
