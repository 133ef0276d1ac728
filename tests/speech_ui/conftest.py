"""Fixtures of the speech-on-the-pages tests: a small video whose sound is real speech made with Debian's espeak-ng
(`espeak-ng -w`), placed at known times and muxed with ffmpeg, and helpers that transcribe it with the real
PocketSphinx engine through the application layer, as the pages, the CLI and the API do."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pages.conftest import media_files, video_bytes  # noqa: F401 - the page tests' fixtures, used here too

VOICE = "en-us+f5"  # the espeak voice PocketSphinx hears best (measured by the speech room's tests)
SAID = [(1.0, "The meeting starts at nine in the morning."), (6.0, "Thank you all for coming to this presentation.")]
SECONDS = 11.0


@dataclass(frozen=True)
class SpeechVideo:
    """The made video: its path, what was said from when (seconds), and its length."""

    path: Path
    said: list[tuple[float, str]]
    seconds: float


def _ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def make_speech_video(folder: Path, said: list[tuple[float, str]] = SAID, seconds: float = SECONDS,
                      name: str = "meeting.mp4") -> Path:
    """A 160x120 H.264 video of `seconds` with an AAC track: each sentence of `said` spoken by espeak-ng from its
    time, silence between."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng, listed in scripts/apt-packages-test.txt)")
    cmd = [_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=10:duration={seconds}"]
    mix = []
    for n, (at, text) in enumerate(said):
        wav = folder / f"said-{n}.wav"
        subprocess.run(["espeak-ng", "-v", VOICE, "-s", "150", "-w", str(wav), text], check=True)
        cmd += ["-i", str(wav)]
        mix.append(f"[{n + 1}:a]adelay={int(at * 1000)}:all=1[s{n}]")
    labels = "".join(f"[s{n}]" for n in range(len(said)))
    graph = ";".join(mix) + f";{labels}amix=inputs={len(said)}:normalize=0:duration=longest,apad,atrim=0:{seconds}[out]"
    out = folder / name
    cmd += ["-filter_complex", graph, "-map", "0:v", "-map", "[out]", "-c:v", "libx264", "-preset", "ultrafast",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-t", str(seconds), str(out)]
    subprocess.run(cmd, check=True)
    return out


@pytest.fixture(scope="session")
def speech_video(tmp_path_factory: pytest.TempPathFactory) -> SpeechVideo:
    """meeting.mp4: 'The meeting starts at nine in the morning.' from 1.0 s and 'Thank you all for coming to this
    presentation.' from 6.0 s, 11 s in all."""
    return SpeechVideo(make_speech_video(tmp_path_factory.mktemp("speech-video")), SAID, SECONDS)


def transcribe_into(cache_dir: Path, path: Path, sha: str | None = None, cache=None):
    """The transcript of `path` made by PocketSphinx through core/app into the result cache at `cache_dir` (or the
    open `cache`, e.g. the dashboard's own), as the Video Q&A page's speech stage does."""
    from core.app.runtime import Runtime
    from core.app.speech import transcribe
    from core.jobs.registry import JobRegistry
    from core.settings import Settings

    settings = Settings(cache_dir=cache_dir, speech_engine="pocketsphinx")
    with Runtime(settings, cache=cache, jobs=JobRegistry()) as runtime:
        return transcribe(runtime, path, input_hash=sha)
