"""Sound to transcribe: a video's audio track or an audio file (wav, mp3, m4a, flac, ogg, opus...) decoded with
PyAV to 16 kHz mono float32, its times those of the file (a track that starts late is padded with silence, so a
word's time is its time on the video's timeline).

    info = probe_audio("talk.mp4")          # headers only: is there sound, how long, which codec
    audio = decode_audio("talk.mp4")        # AudioTrack(samples float32 at 16 kHz, duration_s, ...)
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.events import CancelToken, Progress, raise_if_cancelled, report
from core.media.avopen import open_input
from core.speech.errors import AudioUnreadable, NoAudioTrack

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
AUDIO_SUFFIXES = {".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg", ".oga", ".opus", ".wma", ".aif", ".aiff", ".amr",
                  ".weba", ".mka"}
"""Names of audio files (anything PyAV/FFmpeg reads works; these say "audio" without opening the file)."""
_FIX_READ = ("Give a video with sound or an audio file (wav, mp3, m4a, flac, ogg, opus); check that the file is "
             "complete (a download that stopped early cannot be read).")


def is_audio_file(path: str | os.PathLike[str]) -> bool:
    """True when the file's name says it is audio (by its suffix)."""
    return Path(path).suffix.lower() in AUDIO_SUFFIXES


@dataclass
class AudioInfo:
    """What the headers of a file say about its sound (no decoding). duration_s: of the file (container)."""

    path: str
    has_audio: bool
    has_video: bool
    duration_s: float
    codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    container: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)


@dataclass
class AudioTrack:
    """Decoded sound: `samples` float32 mono at `sample_rate` Hz, sample 0 at time 0 of the file.

    source: "audio file" or "audio track of a video". warnings: what was repaired on the way (damaged packets
    skipped, a late start padded).
    """

    samples: np.ndarray
    sample_rate: int
    source: str
    codec: str | None
    path: str
    warnings: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """Length of the decoded sound in seconds."""
        return len(self.samples) / float(self.sample_rate)

    def stretch(self, start: float, end: float) -> np.ndarray:
        """The samples between `start` and `end` seconds (a view, not a copy)."""
        lo = max(0, int(round(start * self.sample_rate)))
        hi = min(len(self.samples), int(round(end * self.sample_rate)))
        return self.samples[lo:max(lo, hi)]


def _open(path: str | os.PathLike[str]) -> Any:
    import av

    p = Path(path)
    if not p.is_file():
        raise AudioUnreadable(f"{p.name or path} is not a file that exists here.", "Check the path of the file.")
    try:
        return open_input(p)
    except (av.FFmpegError, OSError, ValueError) as exc:
        why = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise AudioUnreadable(f"{p.name} cannot be read as audio or video ({why}).", _FIX_READ) from None


def _duration(container: Any, stream: Any | None) -> float:
    if container.duration:
        return max(0.0, float(container.duration) / 1_000_000)
    if stream is not None and stream.duration and stream.time_base:
        return max(0.0, float(stream.duration * stream.time_base))
    return 0.0


def _no_audio(name: str) -> NoAudioTrack:
    return NoAudioTrack(f"{name} has no audio track (it holds pictures only), so there is nothing to transcribe.",
                        "Choose the version of the video with its sound, or transcribe the sound kept in a separate "
                        "audio file (wav, mp3, m4a, flac).")


def probe_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """What the file's headers say about its sound; AudioUnreadable when it cannot be opened."""
    container = _open(path)
    try:
        audio = container.streams.audio[0] if container.streams.audio else None
        video = any(s.type == "video" and not _is_cover(s) for s in container.streams)
        ctx = audio.codec_context if audio is not None else None
        return AudioInfo(path=str(path), has_audio=audio is not None, has_video=video,
                         duration_s=_duration(container, audio), codec=ctx.name if ctx is not None else None,
                         sample_rate=int(ctx.sample_rate) if ctx is not None and ctx.sample_rate else None,
                         channels=int(ctx.channels) if ctx is not None and getattr(ctx, "channels", 0) else None,
                         container=str(container.format.name or ""))
    finally:
        container.close()


def _is_cover(stream: Any) -> bool:
    """A still picture attached to an audio file (album art) is not a video."""
    try:
        return bool(stream.disposition & 0x400)  # AV_DISPOSITION_ATTACHED_PIC
    except (AttributeError, TypeError):
        return False


def decode_audio(path: str | os.PathLike[str], progress: Progress | None = None,
                 cancel: CancelToken | None = None) -> AudioTrack:
    """The file's first audio track as 16 kHz mono float32, times those of the file.

    NoAudioTrack (cause + fix) for a video without sound, AudioUnreadable for a file FFmpeg cannot read;
    damaged packets are skipped (said in `warnings`) rather than ending the decode. Cancelled when `cancel` is set.
    """
    import av

    name = Path(path).name
    container = _open(path)
    try:
        if not container.streams.audio:
            raise _no_audio(name)
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        has_video = any(s.type == "video" and not _is_cover(s) for s in container.streams)
        total = _duration(container, stream)
        origin = float(container.start_time) / 1_000_000 if container.start_time is not None else 0.0
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        parts: list[np.ndarray] = []
        warnings: list[str] = []
        first_time: float | None = None
        damaged = 0
        n = 0
        report(progress, 0.0, "reading the sound", "audio")
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError):
                damaged += 1
                continue
            for frame in frames:
                if first_time is None and frame.time is not None:
                    first_time = float(frame.time)
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
                n += 1
                if n % 500 == 0:
                    raise_if_cancelled(cancel)
                    if total > 0 and frame.time is not None:
                        report(progress, (float(frame.time) - origin) / total,
                               f"reading the sound ({clock(float(frame.time) - origin)} of {clock(total)})", "audio")
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        codec = stream.codec_context.name if stream.codec_context is not None else None
    except av.FFmpegError as exc:
        why = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise AudioUnreadable(f"The sound of {name} cannot be decoded ({why}).", _FIX_READ) from None
    finally:
        container.close()
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    if damaged:
        warnings.append(f"{damaged} damaged audio packet{'s' if damaged != 1 else ''} skipped (silence there).")
    if samples.size == 0:
        if damaged:
            raise AudioUnreadable(f"The sound of {name} could not be decoded: every packet was damaged.", _FIX_READ)
        raise _no_audio(name) if has_video else AudioUnreadable(f"{name} holds no sound (an empty audio track).",
                                                                _FIX_READ)
    lead = (first_time - origin) if first_time is not None else 0.0
    if lead > 0.001:  # the sound starts after the file does: pad, so times are the video's
        samples = np.concatenate([np.zeros(int(round(lead * SAMPLE_RATE)), dtype=np.float32), samples])
        if lead > 0.5:
            warnings.append(f"the sound starts {lead:.2f} s into the file; the time before it is silence")
    elif lead < -0.001:  # sound before the file's start (an edit list): drop it
        samples = samples[int(round(-lead * SAMPLE_RATE)):]
    np.clip(samples, -1.0, 1.0, out=samples)
    report(progress, 1.0, f"sound read: {clock(len(samples) / SAMPLE_RATE)}", "audio")
    return AudioTrack(samples=samples, sample_rate=SAMPLE_RATE,
                      source="audio track of a video" if has_video else "audio file", codec=codec, path=str(path),
                      warnings=warnings)


def clock(seconds: float) -> str:
    """'3:05' or '1:02:03' (whole seconds) for messages."""
    s = int(max(0.0, seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
