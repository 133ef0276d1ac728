"""POST /video/transcript: an uploaded video's speech as JSON (segments with times, words, the engine), SRT or
WebVTT by the `format` field, the same transcript the dashboard shows (one result cache); a file without sound is
a 400 naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.cache import hash_file
from core.settings import Settings
from core.speech.exports import parse_srt, parse_vtt
from core.speech.types import Transcript


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from core.api import create_app

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no speech model here: auto is PocketSphinx
    settings = Settings(model=str(tmp_path / "no-model-here"), offline=True, cache_dir=tmp_path / "cache",
                        max_upload_mb=5)
    with TestClient(create_app(settings)) as c:
        yield c


def test_json_then_srt_and_vtt_of_the_same_transcript(client: TestClient, speech_video) -> None:
    data = speech_video.path.read_bytes()
    r = client.post("/video/transcript", files={"file": ("meeting.mp4", data, "video/mp4")})
    assert r.status_code == 200, r.text
    body = r.json()
    heard = Transcript.from_dict(body)
    assert heard.engine == "pocketsphinx" and r.headers["X-VLScope-Engine"] == "pocketsphinx"
    assert heard.input_hash == hash_file(speech_video.path) and heard.complete
    assert [round(s.start) for s in heard.segments] == [1, 6]  # said from 1.0 s and 6.0 s
    assert "morning" in heard.segments[0].text and heard.segments[0].words
    assert body["better_model"].startswith("Made by PocketSphinx, the offline engine")

    srt = client.post("/video/transcript", files={"file": ("meeting.mp4", data, "video/mp4")},
                      data={"format": "srt"})
    assert srt.status_code == 200 and srt.headers["content-type"].startswith("application/x-subrip")
    assert srt.headers["content-disposition"] == 'attachment; filename="meeting.srt"'
    assert [(s.start, s.end, s.text) for s in parse_srt(srt.text)] == [(s.start, s.end, s.text)
                                                                        for s in heard.segments]
    vtt = client.post("/video/transcript?format=vtt", files={"file": ("meeting.mp4", data, "video/mp4")})
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert [round(s.start, 2) for s in parse_vtt(vtt.text)] == [round(s.start, 2) for s in heard.segments]


def test_a_video_without_sound_and_a_bad_format(client: TestClient, tmp_path: Path) -> None:
    from tests.pages.media import make_video

    silent = make_video(tmp_path / "shots.mp4", seconds=2).read_bytes()
    r = client.post("/video/transcript", files={"file": ("shots.mp4", silent, "video/mp4")})
    assert r.status_code == 400 and r.json()["detail"].startswith("shots.mp4 has no audio track")
    bad = client.post("/video/transcript", files={"file": ("shots.mp4", silent, "video/mp4")}, data={"format": "doc"})
    assert bad.status_code == 422


def test_a_speech_model_that_is_not_here_is_a_503_with_the_fix(client: TestClient, speech_video) -> None:
    r = client.post("/video/transcript", files={"file": ("meeting.mp4", speech_video.path.read_bytes(), "video/mp4")},
                    data={"engine": "whisper"})
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert "openai/whisper-large-v3-turbo" in detail and "hf download" in detail and "upload" not in detail
