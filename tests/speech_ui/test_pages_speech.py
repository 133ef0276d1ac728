"""The pages with speech, driven headlessly (AppTest) on a video whose sound is espeak-ng speech and the real
PocketSphinx engine: the Video Q&A page's speech stage runs in the background and gives the transcript beside the
player (its subtitles, the segment at the player's position, search, time buttons that seek, SRT / WebVTT / text /
JSON downloads), a Speech lane on the timeline, the better-model note once; the Summaries page shows and starts it
too; with the tiny model an answer says what was heard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.speech.exports import parse_srt, parse_vtt
from core.speech.types import Transcript

from tests.pages.conftest import download_bytes, page, wait_job


def _upload(at: AppTest, path: Path) -> AppTest:
    at.file_uploader(key="video_upload").set_value((path.name, path.read_bytes(), "video/mp4")).run()
    assert not at.exception, at.exception
    return at


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def _transcribe_on_the_page(at: AppTest) -> None:
    for stage in ("scenes", "motion", "text"):  # speech only: the frames' stages are tested elsewhere
        at.checkbox(key=f"video_stage_{stage}").uncheck().run()
    speech = at.checkbox(key="video_stage_speech")
    assert speech.value is True and not speech.disabled  # on by default for a video with sound
    at.button(key="video_analyze").click().run()
    assert not at.exception, at.exception
    wait_job("speech:")
    at.run()
    assert not at.exception, at.exception


def test_transcribe_then_read_search_seek_and_download(app_env: Path, speech_video, media_files,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    names: set[str] = set()
    stores = MemoryMediaFileStorage.load_and_get_id

    def named(self, data, mimetype, kind, filename=None):  # the download's file name, as the browser saves it
        names.add(filename or "")
        return stores(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", named)
    at = _upload(AppTest.from_file(page("video"), default_timeout=90).run(), speech_video.path)
    assert not [m for m in at.markdown if m.value.startswith("**Transcript**")]
    _transcribe_on_the_page(at)
    head = [m.value for m in at.markdown if m.value.startswith("**Transcript**")]
    assert len(head) == 1 and head[0].startswith("**Transcript** · 2 segments · 0:0") and \
        head[0].endswith(" of speech in 0:11 · English · heard by PocketSphinx (offline, English only)")
    notes = [c.value for c in at.caption if c.value.startswith("Made by PocketSphinx, the offline engine")]
    # once, in plain words
    assert len(notes) == 1 and "run hf download openai/whisper-large-v3-turbo on a machine" in notes[0]
    timeline = [m.value for m in at.markdown if m.value.startswith("**Timeline**")]
    assert timeline == ["**Timeline** · Speech: 2"]
    [player] = at.get("video")
    assert [s.label for s in player.proto.subtitles] == ["Speech"]  # the browser shows what is said as it plays
    assert player.proto.start_time == 0
    assert any(c.value == "Said at the player's position (0:00)." or "Nothing is said at the player's position (0:00)."
               in c.value for c in at.caption)

    # the time of the second segment moves the player there, and that segment is shown as the one being said
    _button(at, "▶ 0:06").click().run()
    assert not at.exception, at.exception
    assert at.get("video")[0].proto.start_time == 6
    assert any(c.value.startswith("Said at the player's position (0:06), 0:06–0:0") for c in at.caption)
    assert any("presentation" in m.value and not m.value.startswith("**") for m in at.markdown)
    assert any(c.value == "Player set to 0:06.0 (it jumps to whole seconds)." for c in at.caption)

    # search: only the segment holding the words, with its time button
    at.text_input(key="video_transcript_query").input("MORNING").run()
    assert any(c.value == "“MORNING” is said in 1 segment." for c in at.caption)
    times = [b.label for b in at.button if b.label.startswith("▶ ")]
    assert times == ["▶ 0:01"]
    _button(at, "▶ 0:01").click().run()
    assert at.get("video")[0].proto.start_time == 1
    at.text_input(key="video_transcript_query").input("budget").run()
    assert any(c.value == "“budget” is not said in the transcript." for c in at.caption)

    # downloads: the same segments in each format, named after the file
    json_text = download_bytes(at, media_files, "video_transcript_dl_json").decode()
    heard = Transcript.from_dict(json.loads(json_text))
    assert [round(s.start) for s in heard.segments] == [1, 6]
    srt = parse_srt(download_bytes(at, media_files, "video_transcript_dl_srt").decode())
    vtt = parse_vtt(download_bytes(at, media_files, "video_transcript_dl_vtt").decode())
    assert [(s.start, s.end, s.text) for s in srt] == [(s.start, s.end, s.text) for s in heard.segments]
    assert [s.text for s in vtt] == [s.text for s in heard.segments]
    txt = download_bytes(at, media_files, "video_transcript_dl_txt").decode()
    assert txt.splitlines() == [s.text for s in heard.segments]
    assert {"meeting.srt", "meeting.vtt", "meeting.txt", "meeting.json"} <= names

    # the timeline's "Go to event" reaches the speech too
    pick = at.selectbox(key="video_event_pick")
    second = next(i for i in pick.options if "Speech" in i and i.startswith("0:06"))
    pick.set_value(pick.options.index(second)).run()
    assert at.get("video")[0].proto.start_time == 6
    assert any(m.value.startswith("**Selected:** Speech from 0:06") for m in at.markdown)


def test_a_video_without_sound_has_no_speech_stage(app_env: Path, video_bytes: bytes) -> None:
    at = AppTest.from_file(page("video"), default_timeout=60).run()
    at.file_uploader(key="video_upload").set_value(("cuts.mp4", video_bytes, "video/mp4")).run()
    speech = at.checkbox(key="video_stage_speech_silent")
    assert speech.label == "Speech (transcribes the sound)"
    assert speech.value is False and speech.disabled and speech.help == "This video has no sound to transcribe."
    assert not [m for m in at.markdown if m.value.startswith("**Transcript**")]
    assert not at.get("video")[0].proto.subtitles


def test_summaries_shows_and_starts_the_transcript(app_env: Path, speech_video) -> None:
    at = AppTest.from_file(page("summaries"), default_timeout=90).run()
    at.file_uploader(key="summary_upload").set_value(("meeting.mp4", speech_video.path.read_bytes(), "video/mp4")).run()
    assert not at.exception, at.exception
    at.button(key="summary_transcribe").click().run()
    wait_job("speech:")
    at.run()
    assert not at.exception, at.exception
    assert any(m.value.startswith("**Transcript** · 2 segments") for m in at.markdown)
    assert any(m.value == "**Timeline** · Speech: 2" for m in at.markdown)
    assert [s.label for s in at.get("video")[0].proto.subtitles] == ["Speech"]
    _button(at, "▶ 0:06").click().run()
    assert at.get("video")[0].proto.start_time == 6
    assert not [b for b in at.button if b.key == "summary_transcribe"]  # done: nothing left to start


def test_an_answer_with_a_transcript_says_what_was_heard(app_env: Path, speech_video, tiny_model_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLSCOPE_MODEL", str(tiny_model_dir))
    at = _upload(AppTest.from_file(page("video"), default_timeout=120).run(), speech_video.path)
    _transcribe_on_the_page(at)
    assert any("is given to the model with the frames" in c.value for c in at.caption)
    at.number_input(key="gen_max_new_tokens").set_value(4).run()
    at.slider(key="gen_temperature").set_value(0.0).run()
    at.toggle(key="video_refine").set_value(False).run()
    at.text_input(key="video_question").input("What is said between 0:06 and 0:10?").run()
    at.button(key="video_ask").click().run()
    assert not at.exception, at.exception
    evidence = [c.value for c in at.caption if c.value.startswith("Evidence: ")]
    assert len(evidence) == 1 and "seen: " in evidence[0] and " frames from 0:0" in evidence[0]
    assert "heard: the speech at 0:06–0:0" in evidence[0] and "0:01–" not in evidence[0]
