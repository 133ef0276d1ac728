"""pages/library.py driven headlessly through the app's own navigation (Home.py): files analysed earlier are
listed with plain stage names (a failed upload is not), found by the text read in them through the full-text
index with filters, each hit linking to its page at its moment (`?file=<sha>&t=<s>`, `?file=<sha>&page=<n>`),
opened here from the cache and played, exported, and deleted after a question, with a confirmation."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from urllib.parse import parse_qs

from streamlit.testing.v1 import AppTest

from tests.pages.conftest import ROOT, download_bytes
from tests.pages.media import text_image


def _fill_library(video_bytes: bytes) -> dict[str, str]:
    """Analyse a video (scenes, on-screen text) and OCR an image into the app's cache, as the other pages do; a
    failed upload recorded too."""
    from core.analysis.video_pipeline import analyze_video
    from core.files import store_upload
    from core.library import record_file
    from core.ocr.pipeline import OcrOptions, run_ocr
    from ui.state import get_cache, get_settings

    cache, settings = get_cache(), get_settings()
    video = store_upload(io.BytesIO(video_bytes), "three-shots.mp4", settings.cache_dir, 10**8)
    record_file(cache, video.sha256, video.name, video.kind, video.path, video.size_bytes)
    analyze_video(video.path, stages=("scenes", "text"), cache=cache, input_hash=video.sha256)
    image = store_upload(io.BytesIO(text_image(["Invoice from Acme", "Payment due in March"])), "acme.png",
                         settings.cache_dir, 10**8)
    record_file(cache, image.sha256, image.name, image.kind, image.path, image.size_bytes)
    run_ocr(image.path, OcrOptions(), name=image.name, cache=cache)
    broken = store_upload(io.BytesIO(b"\x00garbage" * 500), "broken.mp4", settings.cache_dir, 10**8)
    record_file(cache, broken.sha256, broken.name, broken.kind, broken.path, broken.size_bytes)
    return {"video": video.sha256, "image": image.sha256, "broken": broken.sha256}


def _library(at: AppTest | None = None) -> AppTest:
    at = at or AppTest.from_file(str(ROOT / "Home.py"), default_timeout=90).run()
    at.switch_page("pages/library.py").run()
    assert not at.exception, at.exception
    return at


def _texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown] + [c.value for c in at.caption]


def _links(at: AppTest) -> list[tuple[str, dict[str, list[str]]]]:
    return [(p.proto.label, parse_qs(p.proto.query_string)) for p in at.main.get("page_link")]


def test_list_search_filter_open_play_export_delete(app_env: Path, video_bytes: bytes,
                                                    media_files: dict[str, bytes]) -> None:
    at = _library()
    assert any("library is empty" in i.value for i in at.info)
    sha = _fill_library(video_bytes)
    at.run()
    assert not at.exception, at.exception
    texts = _texts(at)
    assert "2 file(s), most recently added first" in texts
    assert any(t.startswith("**acme.png** · Image · added ") for t in texts)
    assert any(t.startswith("**three-shots.mp4** · Video · added ") for t in texts)
    assert not any("broken" in t for t in texts)  # the failed upload is not an item
    assert "Done: Video details, Scene cuts, On-screen text" in texts and "Done: OCR" in texts
    assert not any("video." in t or "none yet" in t or "None" in t for t in texts)
    assert ("Open on Video Q&A", {"file": [sha["video"]]}) in _links(at)
    assert ("Open on OCR", {"file": [sha["image"]]}) in _links(at)

    # words read by OCR: the image, page 1, the words in bold; a link to its page
    at.text_input(key="lib_query").input("payment due").run()
    texts = _texts(at)
    assert any(t.startswith("“payment due” found in 1 place(s) in 1 file(s)") for t in texts)
    assert "**acme.png** · Image · OCR text, page 1" in texts
    assert "Invoice from Acme **Payment** **due** in March" in texts
    assert _links(at) == [("Open page 1", {"file": [sha["image"]], "page": ["1"]})]

    # words on screen in the video (2 s to 4 s): a link that plays it there
    at.text_input(key="lib_query").input("hello").run()
    [(label, params)] = _links(at)
    assert label.startswith("Play at 0:0") and params["file"] == [sha["video"]]
    t = float(params["t"][0])
    assert 1.0 <= t <= 4.0
    assert any(m.startswith("**three-shots.mp4** · Video · On-screen text at 0:0") for m in _texts(at))
    assert "**HELLO** 42" in _texts(at)

    # filters: kind and where the words were found
    at.multiselect(key="lib_kinds").set_value(["Image"]).run()
    assert any("Nothing matches “hello” with these filters." in i.value for i in at.info)
    at.multiselect(key="lib_kinds").set_value(["Video"]).run()
    at.multiselect(key="lib_stages").set_value(["OCR text"]).run()
    assert any("Nothing matches" in i.value for i in at.info)
    at.multiselect(key="lib_stages").set_value(["On-screen text"]).run()
    assert len(_links(at)) == 1
    at.multiselect(key="lib_stages").set_value([]).run()
    at.multiselect(key="lib_kinds").set_value([]).run()

    # the hit opens the item here too: its results, and the player at that moment
    at.button(key="lib_hit_details_0").click().run()
    assert not at.exception, at.exception
    assert any(m.value == "**Events** · Scenes (shots): 3 · On-screen text: 1" for m in at.markdown)
    [player] = at.get("video")
    assert player.proto.start_time == int(t)
    assert ("Open on Video Q&A at " + label.removeprefix("Play at "), {"file": [sha["video"]], "t": params["t"]}) \
        in _links(at)
    archive = zipfile.ZipFile(io.BytesIO(download_bytes(at, media_files, "lib_export")))
    assert {"item.json", "events.json", "thumbnail.jpg"} <= set(archive.namelist())
    assert len(json.loads(archive.read("events.json"))) == 4

    # Delete asks first (a popover), then says what was deleted
    at.button(key="lib_delete").click().run()
    assert not at.exception, at.exception
    [done] = at.success
    assert done.value.startswith("Deleted three-shots.mp4: ") and "stored result(s)" in done.value
    at.text_input(key="lib_query").input("").run()
    assert "1 file(s), most recently added first" in _texts(at)
    assert not list((app_env / "cache" / "uploads").glob(f"{sha['video']}*"))
    assert not at.success  # said once


def test_the_link_of_a_hit_opens_the_video_at_that_moment(app_env: Path, video_bytes: bytes) -> None:
    at = _library()
    sha = _fill_library(video_bytes)
    at.text_input(key="lib_query").input("hello").run()
    [(_, params)] = _links(at)
    # what the browser does with the link: the Video Q&A page with ?file=<sha>&t=<s>
    follow = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=90)
    follow.query_params["file"] = params["file"][0]
    follow.query_params["t"] = params["t"][0]
    follow.run()
    follow.switch_page("pages/video.py").run()
    assert not follow.exception, follow.exception
    assert any(c.value.startswith("**three-shots.mp4**") for c in follow.caption)
    assert follow.get("video")[0].proto.start_time == int(float(params["t"][0]))
    assert params["file"] == [sha["video"]]


def test_many_files_are_listed_a_page_at_a_time(app_env: Path) -> None:
    import time as clock

    from core.cache import make_key
    from ui.state import get_cache

    cache = get_cache()
    for n in range(45):
        sha = f"{n:064x}"
        cache.put_json(make_key(sha, "library.file", {}), {"name": f"scan-{n:02d}.pdf", "kind": "pdf", "path": "",
                                                           "size_bytes": 1000, "added_at": clock.time() - n,
                                                           "readable": True})
        cache.put_json(make_key(sha, "ocr-page", {}), {"index": 0, "width": 1, "height": 1,
                                                        "lines": [{"text": f"Receipt number {n}"}]})
    at = _library()
    assert "45 file(s), most recently added first; the first 20 shown" in _texts(at)
    assert sum(1 for t in _texts(at) if t.startswith("**scan-")) == 20
    at.button(key="lib_more").click().run()
    assert "45 file(s), most recently added first; the first 40 shown" in _texts(at)
    at.text_input(key="lib_query").input("receipt").run()
    assert any(t.startswith("“receipt” found in 45 place(s) in 45 file(s), best first; 45 shown") for t in _texts(at))

    # the date filter: files added between two days (both included)
    from datetime import date, timedelta

    today = date.today()
    at.date_input(key="lib_dates").set_value((today - timedelta(days=5), today - timedelta(days=3))).run()
    assert any(i.value.startswith("Nothing matches “receipt” with these filters.") for i in at.info)
    at.text_input(key="lib_query").input("").run()
    assert any("No file matches these filters." in i.value for i in at.info)
    at.date_input(key="lib_dates").set_value((today - timedelta(days=1), today)).run()
    assert any(t.startswith("45 file(s), most recently added first") for t in _texts(at))
