"""One working set per browser session, driven through the app's own navigation (Home.py, as a user runs it):
a file opened on one page is the current file of every page, the time window survives a page change (the
one-handle slider and its TypeError), links `?file=<sha256>&t=<s>` open a stored file at a moment, and the
session's jobs are listed in the sidebar with a link back."""

from __future__ import annotations

import hashlib
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.pages.conftest import ROOT, wait_job
from tests.pages.media import text_image


def _app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def _go(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def _upload(at: AppTest, key: str, name: str, data: bytes, mime: str = "video/mp4") -> AppTest:
    at.file_uploader(key=key).set_value((name, data, mime)).run()
    assert not at.exception, at.exception
    return at


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_leaving_and_coming_back_keeps_the_window_and_the_same_upload_works(app_env: Path,
                                                                          video_bytes: bytes) -> None:
    at = _go(_app(), "video")
    _upload(at, "video_upload", "cuts.mp4", video_bytes)
    at.slider(key="video_window").set_value((1.0, 5.0)).run()
    assert {m.label: m.value for m in at.metric}["Frames"] == "8"  # 4 s at 2 fps
    _go(at, "library")
    _go(at, "video")
    # the same file uploaded again (what a user does when the uploader looks empty): no TypeError, two handles
    _upload(at, "video_upload", "cuts.mp4", video_bytes)
    assert at.slider(key="video_window").value == (1.0, 5.0)
    assert {m.label: m.value for m in at.metric}["Frames"] == "8"
    # and without uploading again: the file is still open although the uploader is empty, the window kept
    _go(at, "library")
    _go(at, "video")
    assert any(c.startswith("**cuts.mp4** · 0:06") for c in _captions(at))
    assert at.slider(key="video_window").value == (1.0, 5.0)
    _go(at, "summaries")
    _go(at, "video")
    _upload(at, "video_upload", "cuts.mp4", video_bytes)
    assert isinstance(at.slider(key="video_window").value, tuple)


def test_the_file_opened_on_one_page_is_current_on_the_others(app_env: Path, video_bytes: bytes) -> None:
    at = _go(_app(), "video")
    _upload(at, "video_upload", "talk.mp4", video_bytes)
    _go(at, "summaries")
    assert any(c.startswith("**talk.mp4** · 0:06") for c in _captions(at))
    assert any("Open: **talk.mp4**" in c for c in _captions(at))
    assert len(at.get("video")) == 1  # the Summaries page plays it too
    assert "Video: **talk.mp4**" in [c.value for c in at.sidebar.caption]
    # a document opened on the OCR page does not replace the video; the video is not offered to OCR
    _go(at, "ocr")
    assert any("Upload an image" in i.value for i in at.info)
    png = text_image(["Invoice 4711"])
    _upload(at, "ocr_upload", "invoice.png", png, "image/png")
    _go(at, "video")
    assert any(c.startswith("**talk.mp4** · 0:06") for c in _captions(at))
    _go(at, "ocr")
    assert any("Open: **invoice.png**" in c for c in _captions(at))
    sidebar = [c.value for c in at.sidebar.caption]
    assert "Video: **talk.mp4**" in sidebar and "Document: **invoice.png**" in sidebar
    # closing the video closes it on every page
    _go(at, "summaries")
    at.button(key="summary_close").click().run()
    assert any("Upload a video" in i.value for i in at.info)
    _go(at, "video")
    assert any("Upload a video" in i.value for i in at.info)


def test_a_link_with_the_file_hash_and_a_time_opens_it_there(app_env: Path, video_bytes: bytes) -> None:
    first = _go(_app(), "video")
    _upload(first, "video_upload", "lecture.mp4", video_bytes)  # stored on the server and in the Library
    sha = hashlib.sha256(video_bytes).hexdigest()
    # another browser session follows the Library's link: /video?file=<sha>&t=4
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=60)
    at.query_params["file"] = sha
    at.query_params["t"] = "4"
    at.run()
    _go(at, "video")
    assert any(c.startswith("**lecture.mp4** · 0:06") for c in _captions(at))
    assert at.get("video")[0].proto.start_time == 4
    assert any(c.startswith("Player set to 0:04") for c in _captions(at))
    # the same session on Summaries: the same file, the player at the same moment
    _go(at, "summaries")
    assert any(c.startswith("**lecture.mp4**") for c in _captions(at))
    assert at.get("video")[0].proto.start_time == 4


def test_a_link_to_a_file_no_longer_on_the_server_says_so(app_env: Path) -> None:
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=60)
    at.query_params["file"] = "ab" * 32
    at.run()
    _go(at, "video")
    assert any("not on this server" in w.value and "Library" in w.value for w in at.warning)
    assert any("Upload a video" in i.value for i in at.info)
    bad = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=60)
    bad.query_params["file"] = "../../etc/passwd"
    bad.run()
    _go(bad, "summaries")
    assert any("names no stored file" in w.value for w in bad.warning)


def test_the_sidebar_lists_the_sessions_job_with_a_link_back(app_env: Path, video_bytes: bytes) -> None:
    at = _go(_app(), "video")
    _upload(at, "video_upload", "cuts.mp4", video_bytes)
    at.checkbox(key="video_stage_text").uncheck().run()
    at.button(key="video_analyze").click().run()
    assert not at.exception, at.exception
    wait_job("video:")
    _go(at, "library")
    sidebar = [c.value for c in at.sidebar.caption]
    assert "Analysing cuts.mp4: done" in sidebar
    links = [(p.proto.label, p.proto.page_script_hash) for p in at.sidebar.get("page_link")]
    assert ("Open on Video Q&A", links[-1][1]) in links and links[-1][1]
    # back on the page (through the navigation), the finished analysis is there without pressing anything
    _go(at, "video")
    assert any(m.value.startswith("**Timeline** · Scenes (shots): 3") for m in at.markdown)


def test_a_server_folder_file_opened_by_a_link_and_open_file_as_the_library_calls_it(
        app_env: Path, video_bytes: bytes, monkeypatch) -> None:
    media = app_env / "media"
    (media / "talks").mkdir(parents=True)
    (media / "talks" / "keynote.mp4").write_bytes(video_bytes)
    monkeypatch.setenv("VLSCOPE_MEDIA_ROOT", str(media))
    at = _go(_app(), "video")
    at.radio(key="video_source").set_value("Open from the server folder").run()
    at.selectbox(key="video_server_choice").set_value("talks/keynote.mp4").run()
    assert not at.exception, at.exception
    assert any(c.startswith("**keynote.mp4** · 0:06") for c in _captions(at))
    sha = hashlib.sha256(video_bytes).hexdigest()
    # a link from the Library in another session: the file is found at its place in the server folder
    other = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=60)
    other.query_params["file"] = sha
    other.query_params["t"] = "2.5"
    other.run()
    _go(other, "summaries")
    assert any(c.startswith("**keynote.mp4**") for c in _captions(other))
    assert other.get("video")[0].proto.start_time == 2

    def script() -> None:
        import streamlit as st

        from ui.state import current_file, open_file, seek_of

        sha = st.session_state["sha"]
        found = open_file(sha, "Keynote (final).mp4", "video", t=3.0)
        gone = open_file("0" * 64, "old.mp4", "video")
        current = current_file("video")
        st.write(f"{found.name}|{found.origin}|{current.name}|{seek_of(sha)}|{gone}")

    fn = AppTest.from_function(script, default_timeout=60)
    fn.session_state["sha"] = sha
    fn.run()
    assert not fn.exception, fn.exception
    assert fn.markdown[0].value == "Keynote (final).mp4|server|Keynote (final).mp4|3.0|None"


def test_a_link_to_a_documents_page_opens_it_for_the_ocr_page(app_env: Path) -> None:
    png = text_image(["Invoice 4711"])
    at = _go(_app(), "ocr")
    _upload(at, "ocr_upload", "invoice.png", png, "image/png")
    sha = hashlib.sha256(png).hexdigest()

    def script() -> None:
        import streamlit as st

        from ui.state import current_file, honour_query_params, page_of

        honour_query_params()
        doc = current_file("document")
        st.write(f"{doc.name if doc else None}|{page_of(st.query_params['file'])}|{current_file('video')}")

    follow = AppTest.from_function(script, default_timeout=60)
    follow.query_params["file"] = sha
    follow.query_params["page"] = "2"
    follow.run()
    assert not follow.exception, follow.exception
    assert follow.markdown[0].value == "invoice.png|2|None"
