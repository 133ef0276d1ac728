"""ui/clips.py in a real Streamlit run (AppTest): export a stretch, download the clip and its contact sheet,
join chosen stretches as highlights, and a stretch past the end refused in plain words."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.media.test_clips import decoded, frame_number, make_counter_video
from tests.pages.conftest import download_bytes


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_counter_video(tmp_path_factory.mktemp("clip-page") / "3f2a9c-upload.mp4")


def _script(path: str) -> None:
    from core.events import Event
    from ui.clips import clip_buttons, highlights_picker

    events = [Event("text", 3.3, 5.7, "HELLO 42"), Event("answer", 8.0, 8.0, "the number turns 200"),
              Event("chapter", 4.0, 6.0, "Chapter 2"), Event("scene", 9.0, 11.0, "past the end")]
    clip_buttons(path, events, key="ev", name="My talk.mp4", sheet_tiles=6)
    highlights_picker(path, events, key="hl", name="My talk.mp4")


def _app(video: Path) -> AppTest:
    return AppTest.from_function(_script, args=(str(video),), default_timeout=60).run()


def _probe(data: bytes, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_export_a_clip_and_its_contact_sheet(app_env: Path, video: Path, media_files, tmp_path: Path) -> None:
    from PIL import Image

    at = _app(video)
    assert not at.exception, at.exception
    assert not at.get("download_button")  # nothing offered before it is made
    assert [o for o in at.selectbox(key="ev_pick").options][:3] == [
        "0:03.3 – 0:05.7 HELLO 42", "0:03.0 – 0:10.0 the number turns 200", "0:04.0 – 0:06.0 Chapter 2"]
    at.button(key="ev_clip").click().run()
    assert not at.exception, at.exception
    clip = _probe(download_bytes(at, media_files, "ev_clip_dl"), tmp_path, "clip.mp4")
    frames = decoded(clip)
    assert frames[0][1] == 82 and len(frames) == 60 + 1  # 3.3 s to 5.7 s, re-encoded from the frame shown at 3.3
    captions = [c.value for c in at.caption]
    assert any(c.startswith("Clip: 0:03.3 – 0:05.7, 2.4 s, re-encoded") for c in captions)
    assert any("How: the stretch does not start on a key frame" in c for c in captions)
    button = next(b for b in at.get("download_button") if b.proto.id.endswith("ev_clip_dl"))
    assert button.proto.label == "Download the clip"

    at.button(key="ev_sheet").click().run()
    assert not at.exception, at.exception
    sheet = Image.open(io.BytesIO(download_bytes(at, media_files, "ev_sheet_dl")))
    assert sheet.format == "JPEG"
    assert any(c.startswith("Contact sheet: 6 frames of 0:03.3 – 0:05.7") for c in (c.value for c in at.caption))
    tile = sheet.convert("L").crop((8, 8 + 26 + 8, 8 + 320, 8 + 26 + 8 + 180))  # the first tile, under the title
    assert frame_number(__import__("numpy").asarray(tile)) == 82
    # both stay offered on the next run (e.g. after the download)
    at.run()
    assert {b.proto.id.rsplit("-", 1)[-1] for b in at.get("download_button")} >= {"ev_clip_dl", "ev_sheet_dl"}


def test_a_chapter_on_key_frames_is_copied(app_env: Path, video: Path, media_files, tmp_path: Path) -> None:
    at = _app(video)
    at.selectbox(key="ev_pick").set_value(2).run()
    at.button(key="ev_clip").click().run()
    assert not at.exception, at.exception
    clip = _probe(download_bytes(at, media_files, "ev_clip_dl"), tmp_path, "chapter.mp4")
    assert decoded(clip)[0][1] == 100
    assert any(c.value.startswith("Clip: 0:04.0 – 0:06.") and "copied from the video as it is" in c.value
               for c in at.caption)


def test_a_stretch_past_the_end_is_refused_in_plain_words(app_env: Path, video: Path) -> None:
    at = _app(video)
    at.selectbox(key="ev_pick").set_value(3).run()
    at.button(key="ev_clip").click().run()
    assert not at.exception, at.exception
    [error] = [e.value for e in at.error]
    assert "ends at 0:11.0, after the end of the video" in error and "Give an end at or before 0:10.0" in error
    assert "ClipError" not in error and "3f2a9c" not in error and "/" not in error.replace("\\", "")
    assert not at.get("download_button")


def test_highlights_join_the_chosen_stretches(app_env: Path, video: Path, media_files, tmp_path: Path) -> None:
    at = _app(video)
    assert at.button(key="hl_go").disabled
    at.multiselect(key="hl_pick").set_value([2, 0]).run()  # chosen in any order, joined in the order of the video
    assert any(c.value.startswith("2 stretches, about 4.4 s in all") for c in at.caption)
    at.button(key="hl_go").click().run()
    assert not at.exception, at.exception
    hl = _probe(download_bytes(at, media_files, "hl_dl"), tmp_path, "hl.mp4")
    frames = decoded(hl)
    assert frames[0][1] == 82  # the text event (3.3 s) comes first
    assert frames[-1][0] == pytest.approx(4.4 - 0.04, abs=0.05)  # 2.4 s + 2.0 s
    at_24 = min(frames, key=lambda f: abs(f[0] - 2.4))
    assert at_24[1] == 100  # the chapter (4.0 s) begins 2.4 s into the file
    assert any(c.value.startswith("Highlights: 2 stretches joined, 4.4 s") for c in at.caption)
