"""The application layer the pages, the CLI and the API share: one engine per runtime, a transcript read back
without work (partial while a run is under way or after it stopped), a background job, what a better model adds."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.app.runtime import Runtime
from core.app.speech import better_model_note, cached_transcript, speech, speech_status, transcribe
from core.cache import hash_file
from core.errors import Cancelled
from core.jobs.registry import JobRegistry, JobState
from core.settings import Settings


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    rt = Runtime(Settings(cache_dir=tmp_path / "cache", speech_model="nobody/no-such-whisper"), jobs=JobRegistry())
    yield rt
    rt.close()


def test_cached_transcript_is_none_then_partial_then_complete(runtime: Runtime, short_wav) -> None:
    wav, said = short_wav
    sha = hash_file(wav)
    assert cached_transcript(runtime, sha) is None
    service = speech(runtime)
    assert speech(runtime) is service and service.engine() is service.engine("auto")  # one engine per runtime
    heard: list[int] = []

    def stop_after_first() -> bool:  # `cancelled` as a function, as the brief's callers pass it
        heard.append(service.engine().chunks_transcribed)
        return service.engine().chunks_transcribed >= 1

    with pytest.raises(Cancelled):
        transcribe(runtime, wav, cancelled=stop_after_first)
    partial = cached_transcript(runtime, sha)
    assert partial is not None and not partial.complete and (partial.chunks, partial.chunks_done) == (2, 1)
    assert partial.engine == "pocketsphinx" and partial.segments[0].start == pytest.approx(said[0].start, abs=0.5)
    assert cached_transcript(runtime, sha, partial=False) is None

    job = service.start_transcription(wav, sha, "Transcript: short.wav")
    assert service.start_transcription(wav, sha, "again") is job  # one job per file and choice
    assert job.wait(120)
    snap = job.snapshot()
    assert snap.state is JobState.DONE, snap.error
    assert any(m.startswith("transcribing: ") and "1 already transcribed" in m for m in snap.log), snap.log
    done = job.result
    assert done.complete and done.chunks_done == 2 and service.engine().chunks_transcribed == 2
    assert cached_transcript(runtime, sha) == done
    assert service.transcription_job(sha) is job


def test_status_and_better_model_note(runtime: Runtime) -> None:
    status = speech_status(runtime)
    assert status.engine == "pocketsphinx" and status.error == ""
    assert "nobody/no-such-whisper is not on this machine" in status.reason
    assert "hf download nobody/no-such-whisper" in status.better
    assert better_model_note("whisper") is None
    assert better_model_note("pocketsphinx").startswith("Made by PocketSphinx, the offline engine: English only")


def test_a_video_without_sound_fails_the_job_with_the_message(runtime: Runtime, silent_video: Path) -> None:
    job = speech(runtime).start_transcription(silent_video, hash_file(silent_video), "Transcript", engine="pocketsphinx")
    assert job.wait(60)
    snap = job.snapshot()
    assert snap.state is JobState.FAILED and snap.error.startswith("no-sound.mp4 has no audio track")


def test_the_runtime_has_one_speech_service_and_closing_it_frees_the_speech_models(tmp_path) -> None:
    from core.app.runtime import Runtime
    from core.settings import Settings

    runtime = Runtime(Settings(cache_dir=tmp_path / "cache", speech_engine="pocketsphinx"))
    service = runtime.speech
    assert runtime.speech is service  # one per runtime: its engines are shared by every caller
    closed = []
    service.close = lambda: closed.append(True)  # type: ignore[method-assign]
    runtime.close()
    assert closed == [True] and runtime.speech is not service
