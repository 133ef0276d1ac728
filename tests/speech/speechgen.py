"""Real speech for the speech tests: sentences spoken by Debian's espeak-ng, placed at known times with silence
between them in a WAV file (numpy + wave, at espeak's own 22.05 kHz: the code under test resamples), and muxed into
small videos with ffmpeg. `Said` records what was said where (the truth the transcript is scored against)."""

from __future__ import annotations

import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VOICE = "en-us+f5"  # measured: the espeak voice PocketSphinx hears best (WER 0.14-0.24 at 150 words a minute)
RATE_WPM = 150


@dataclass(frozen=True)
class Said:
    """A sentence heard from `start` to `end` seconds of the file (its voiced part, trailing silence excluded)."""

    start: float
    end: float
    text: str


def espeak() -> str | None:
    """The espeak-ng binary, None when it is not installed."""
    return shutil.which("espeak-ng")


def speak(text: str, voice: str = VOICE, rate: int = RATE_WPM) -> tuple[np.ndarray, int]:
    """(int16 samples, sample rate) of `text` spoken by espeak-ng, leading and trailing silence cut off."""
    out = subprocess.run([espeak() or "espeak-ng", "-v", voice, "-s", str(rate), "--stdout", text],
                         capture_output=True, check=True).stdout
    import io

    with wave.open(io.BytesIO(out)) as w:
        sr = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > 300)
    return (x[loud[0]:loud[-1] + 1].copy() if loud.size else x), sr


def build_speech(path: Path, script: list[tuple[float, str]], total_s: float) -> list[Said]:
    """Write a mono WAV of `total_s` seconds with each (start, sentence) of `script` spoken from `start`; returns
    what was said where."""
    sr = 22050
    track = np.zeros(int(total_s * sr), dtype=np.int16)
    said = []
    for start, text in script:
        clip, clip_sr = speak(text)
        assert clip_sr == sr, f"espeak-ng spoke at {clip_sr} Hz"
        at = int(start * sr)
        assert at + len(clip) <= len(track), f"{text!r} does not fit before {total_s} s"
        track[at:at + len(clip)] = clip
        said.append(Said(start, start + len(clip) / sr, text))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(track.tobytes())
    return said


def ffmpeg() -> str:
    """The ffmpeg binary (the system's, else imageio-ffmpeg's)."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def mux_video(audio: Path | None, out: Path, seconds: float, audio_delay_s: float = 0.0) -> Path:
    """A small 160x120 H.264 video of `seconds` with `audio` as its AAC track (None: no audio track at all);
    `audio_delay_s`: the track starts that late (its first packet's timestamp)."""
    cmd = [ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=10:duration={seconds}"]
    if audio is not None:
        if audio_delay_s:
            cmd += ["-itsoffset", str(audio_delay_s)]
        cmd += ["-i", str(audio), "-c:a", "aac", "-b:a", "64k"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-t", str(seconds), str(out)]
    subprocess.run(cmd, check=True)
    return out


def convert(audio: Path, out: Path) -> Path:
    """`audio` re-encoded by ffmpeg into the format `out`'s suffix names (mp3, m4a, flac, ogg...)."""
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-i", str(audio), str(out)], check=True)
    return out
