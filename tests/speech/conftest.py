"""Fixtures of the speech tests: real speech made with espeak-ng at known times (built once per session), the same
speech muxed into videos, a tiny random Whisper saved locally, and PocketSphinx's transcript of the main file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from speechgen import Said, build_speech, espeak, mux_video  # noqa: E402

needs_espeak = pytest.mark.skipif(espeak() is None, reason="espeak-ng is not installed (Debian package espeak-ng, "
                                                            "listed in scripts/apt-packages-test.txt)")

# Five sentences: two close together (one chunk), a long silence (skipped), two more apart (gaps over 2 s).
SCRIPT = [(1.0, "The meeting starts at nine in the morning."),
          (4.5, "We will talk about the budget for next year."),
          (10.5, "Please send the report to the team before Friday."),
          (27.0, "The weather today is sunny and warm."),
          (32.0, "Thank you all for coming to this presentation.")]
TOTAL_S = 37.0
SHORT_SCRIPT = [(0.5, "Thank you all for coming."), (5.0, "The weather is warm.")]
SHORT_TOTAL_S = 7.5


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if espeak() is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng, listed in scripts/apt-packages-test.txt)")
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def speech_wav(speech_dir: Path) -> tuple[Path, list[Said]]:
    """A 37-second WAV of five sentences at known times (and a 12-second silence in the middle)."""
    path = speech_dir / "meeting.wav"
    return path, build_speech(path, SCRIPT, TOTAL_S)


@pytest.fixture(scope="session")
def short_wav(speech_dir: Path) -> tuple[Path, list[Said]]:
    """A 7.5-second WAV of two short sentences (at 0.5 s and 5.0 s: two chunks)."""
    path = speech_dir / "short.wav"
    return path, build_speech(path, SHORT_SCRIPT, SHORT_TOTAL_S)


@pytest.fixture(scope="session")
def short_video(speech_dir: Path, short_wav: tuple[Path, list[Said]]) -> Path:
    """The short speech as the AAC track of a small H.264 video."""
    return mux_video(short_wav[0], speech_dir / "short.mp4", SHORT_TOTAL_S)


@pytest.fixture(scope="session")
def silent_video(speech_dir: Path) -> Path:
    """A small H.264 video with no audio track at all."""
    return mux_video(None, speech_dir / "no-sound.mp4", 2.0)


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Whisper (model, tokenizer, feature extractor, generation config) saved with save_pretrained."""
    from core.speech.tiny import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="session")
def sphinx_transcript(speech_wav: tuple[Path, list[Said]], tmp_path_factory: pytest.TempPathFactory):
    """(transcript, engine, cache folder) of the main WAV by PocketSphinx through the whole pipeline."""
    from core.cache import ResultCache
    from core.speech.pipeline import transcribe_file
    from core.speech.sphinx import PocketSphinxEngine

    folder = tmp_path_factory.mktemp("speech-cache")
    engine = PocketSphinxEngine()
    with ResultCache(folder, 1 << 30) as cache:
        transcript = transcribe_file(speech_wav[0], engine, cache)
    return transcript, engine, folder
