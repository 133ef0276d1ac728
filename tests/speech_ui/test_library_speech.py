"""Speech in the Library: a video's transcript is in the full-text index (one place per segment, at its time),
found with "Found in: Speech", listed as the stage "Speech", and a hit links to the video at that moment; opening
the item shows what is said and the Speech lane."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from streamlit.testing.v1 import AppTest

from core.cache import ResultCache, hash_file
from core.library import get_item, load_results, record_file
from core.library.index import STAGE_GROUPS, LibraryIndex

from tests.pages.conftest import ROOT
from tests.speech_ui.conftest import transcribe_into


def test_a_transcript_is_indexed_and_found_at_its_time(speech_video, tmp_path: Path) -> None:
    sha = hash_file(speech_video.path)
    heard = transcribe_into(tmp_path / "cache", speech_video.path, sha)
    with ResultCache(tmp_path / "cache") as cache:
        record_file(cache, sha, "meeting.mp4", "video", str(speech_video.path), speech_video.path.stat().st_size)
        index = LibraryIndex(cache, tmp_path / "cache")
        found = index.search("morning")
        [hit] = found.hits
        assert (hit.name, hit.kind, hit.stage, hit.stage_label) == ("meeting.mp4", "video", "speech.transcript",
                                                                     "Speech")
        assert hit.start == heard.segments[0].start and hit.start == pytest.approx(1.0, abs=0.5)
        assert hit.link_params() == {"file": sha, "t": f"{hit.start:g}"}
        assert [(a, b) for a, b in hit.snippet.marks] and "**" not in hit.snippet.text
        assert index.search("presentation", stages=STAGE_GROUPS["Speech"]).hits[0].start == heard.segments[1].start
        assert index.search("presentation", stages=STAGE_GROUPS["On-screen text"]).hits == []
        assert get_item(cache, sha).stages == ["Speech"]  # its chunks are not a second item
        res = load_results(cache, sha)
        assert [e.label for e in res.events if e.kind == "speech"] == [s.text for s in heard.segments]
        assert res.transcript is not None and res.transcript["engine"] == "pocketsphinx"
        index.close()


def test_the_library_page_finds_speech_and_opens_the_video_there(app_env: Path, speech_video) -> None:
    from core.files import store_upload
    from ui.state import get_cache, get_settings

    cache, settings = get_cache(), get_settings()
    stored = store_upload(io.BytesIO(speech_video.path.read_bytes()), "meeting.mp4", settings.cache_dir, 10**8)
    record_file(cache, stored.sha256, stored.name, stored.kind, stored.path, stored.size_bytes)
    heard = transcribe_into(settings.cache_dir, Path(stored.path), stored.sha256, cache=cache)

    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=90).run()
    at.switch_page("pages/library.py").run()
    assert not at.exception, at.exception
    assert any(c.value == "Done: Speech" for c in at.caption), [c.value for c in at.caption]
    at.multiselect(key="lib_stages").set_value(["Speech"]).run()
    at.text_input(key="lib_query").input("presentation").run()
    texts = [m.value for m in at.markdown]
    second = heard.segments[1]
    assert any(t.startswith("**meeting.mp4** · Video · Speech at 0:0") for t in texts), texts
    [(label, params)] = [(p.proto.label, parse_qs(p.proto.query_string)) for p in at.main.get("page_link")]
    assert label.startswith("Play at 0:06") and params == {"file": [stored.sha256], "t": [f"{second.start:g}"]}

    at.button(key="lib_hit_details_0").click().run()
    assert not at.exception, at.exception
    assert at.get("video")[0].proto.start_time == int(second.start)  # the player at the moment found
    assert any(m.value.startswith("**Events** · Speech: 2") for m in at.markdown)
    assert any(m.value == "**Speech** · 2 segment(s) · heard by PocketSphinx" for m in at.markdown)
    table = next(d for d in at.dataframe if "Said" in d.value.columns)
    assert list(table.value["Said"]) == [s.text for s in heard.segments]

    # what the browser does with the link: the Video Q&A page with the video at that moment and its transcript
    follow = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=90)
    follow.query_params["file"] = stored.sha256
    follow.query_params["t"] = params["t"][0]
    follow.run()
    follow.switch_page("pages/video.py").run()
    assert not follow.exception, follow.exception
    assert follow.get("video")[0].proto.start_time == int(second.start)
    assert any(c.value.startswith("Said at the player's position (0:06), 0:06–0:0") for c in follow.caption)
