"""Probe a video file: duration, frame rate (variable too), frame count, size, rotation, codec,
keyframe interval, audio. Reads headers, the container index and at most a few hundred packets;
decodes one frame (to prove the file is decodable and read its rotation); never the whole file.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.media.avopen import open_input
from core.media.errors import VideoError

_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "gif", "tiff_pipe", "apng")
_IMAGE_CODECS = ("png", "mjpeg", "bmp", "webp", "tiff", "gif", "apng")


@dataclass
class VideoInfo:
    """What `probe_video` found. Times in seconds; `width`/`height` are as displayed (rotation applied)."""

    path: str
    size_bytes: int
    container: str
    codec: str
    duration: float
    fps: float
    frame_count: int
    frame_count_exact: bool
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int
    pix_fmt: str
    variable_frame_rate: bool
    keyframe_interval: float | None
    keyframe_count: int | None
    has_audio: bool
    audio_codec: str | None
    start_time: float = 0.0
    bit_rate: int | None = None
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False
    declared_duration: float | None = None  # what the container claims when the file ends before it

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VideoInfo":
        """The VideoInfo stored by `to_dict`."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})

    def time_to_index(self, t: float) -> int:
        """The nominal source frame number shown at `t` seconds (index = round(t * fps))."""
        return max(0, min(self.frame_count - 1, int(round(t * self.fps))))

    def index_to_time(self, index: int) -> float:
        """Seconds of source frame `index` (index / fps), the rule the model's timestamps use."""
        return index / self.fps


def open_container(path: str | os.PathLike[str]) -> Any:
    """An open PyAV container for `path`; raises VideoError with the cause and fix for unusable files."""
    import av

    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p} does not exist; check the path.")
    if p.is_dir():
        raise VideoError(f"{p} is a folder, not a video file; give the path of a video file.")
    size = p.stat().st_size
    if size == 0:
        raise VideoError(f"{p} is empty (0 bytes); the upload or copy did not finish. Copy the file again.")
    try:
        return open_input(p, timeout=30)
    except av.error.InvalidDataError as exc:
        raise VideoError(
            f"{p} is not a video FFmpeg can read ({_first_line(exc)}): it may be truncated, or a "
            "different kind of file renamed. Re-export it as mp4 (H.264) or check that the copy finished."
        ) from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"{p} could not be opened ({_first_line(exc)}); re-export it as mp4 (H.264).") from exc


def clock(seconds: float) -> str:
    """Seconds as m:ss (h:mm:ss past an hour), rounded down: a readable end is never overstated."""
    whole = max(0, int(seconds))
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def truncation_warning(readable: float, declared: float) -> str:
    """The message shown when a file ends before the duration it declares."""
    return (f"the file ends at {clock(readable)} of {clock(declared)} ({readable:.1f} s of {declared:.1f} s can be "
            "read): it looks truncated (the copy or download did not finish). Only the readable part is analysed; "
            "copy the file again to get the rest.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def video_stream(container: Any, path: str | os.PathLike[str]) -> Any:
    """The first video stream of an open container; VideoError for audio-only files and still images."""
    name = container.format.name or ""
    if not container.streams.video:
        if container.streams.audio:
            raise VideoError(
                f"{path} has audio but no video stream (audio only); give a file with pictures, or "
                "extract audio features with another tool."
            )
        raise VideoError(f"{path} has no video stream ({name}); give a video file (mp4, mov, mkv, webm, avi).")
    stream = container.streams.video[0]
    codec = stream.codec_context.name if stream.codec_context else ""
    if any(f in name.split(",") for f in _IMAGE_FORMATS) or (codec in _IMAGE_CODECS and (stream.frames or 0) <= 1
                                                             and not stream.duration):
        raise VideoError(
            f"{path} is a still image ({codec or name}), not a video, whatever its extension; open it as an "
            "image or document instead."
        )
    return stream


def _rate(value: Any) -> float:
    try:
        f = float(value) if value is not None else 0.0
    except (TypeError, ZeroDivisionError):
        return 0.0
    return f if math.isfinite(f) and f > 0 else 0.0


def probe_video(path: str | os.PathLike[str], max_packets: int = 600, decode_first_frame: bool = True) -> VideoInfo:
    """Probe `path` cheaply and return a VideoInfo; VideoError (cause + fix) when it is not a usable video.

    Planning a 10-hour file only reads its header, index and the first `max_packets` packets.
    """
    p = Path(path)
    container = open_container(p)
    try:
        return _probe(container, p, max_packets, decode_first_frame)
    finally:
        container.close()


def _probe(container: Any, p: Path, max_packets: int, decode_first_frame: bool) -> VideoInfo:
    import av

    stream = video_stream(container, p)
    warnings: list[str] = []
    tb = float(stream.time_base) if stream.time_base else 0.0
    cc = stream.codec_context
    codec = cc.name if cc else "unknown"
    fps = _rate(stream.average_rate) or _rate(stream.guessed_rate) or _rate(stream.base_rate)
    start = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0

    duration = 0.0
    if stream.duration and tb:
        duration = float(stream.duration * tb)
    elif container.duration:
        duration = float(container.duration) / 1_000_000  # av.time_base

    # mp4/mov index every frame: keyframes and frame times without demuxing; other containers'
    # indexes (mkv cues) list keyframes only, so their frame times come from the first packets
    key_times: list[float] = []
    pts_sample: list[float] = []
    try:
        entries = stream.index_entries
    except Exception:  # noqa: BLE001 - some demuxers have no index
        entries = None
    n_index = len(entries) if entries is not None else 0
    full_index = n_index > 1 and "mp4" in (container.format.name or "") and bool(tb)
    # a file cut short with its index at the front (mp4 "faststart") still lists every frame: the
    # frames whose bytes lie past the end of the file are missing
    file_size = p.stat().st_size
    present = 0
    first_missing: float | None = None
    if n_index > 1 and tb:
        for i in range(n_index):
            e = entries[i]
            if full_index and e.pos + e.size > file_size and e.pos >= 0:
                t = float(e.timestamp * tb)
                first_missing = t if first_missing is None else min(first_missing, t)
                continue
            present += 1
            if e.is_keyframe:
                key_times.append(float(e.timestamp * tb))
            if full_index and i < max_packets * 4:
                pts_sample.append(float(e.timestamp * tb))
    if not full_index:
        demux_keys: list[float] = []
        try:
            for i, packet in enumerate(container.demux(stream)):
                if i >= max_packets:
                    break
                if packet.pts is None:
                    continue
                t = float(packet.pts * tb)
                pts_sample.append(t)
                if packet.is_keyframe:
                    demux_keys.append(t)
        except av.error.FFmpegError as exc:
            warnings.append(f"reading packets stopped early: {_first_line(exc)}")
        if len(key_times) < 2:
            key_times = demux_keys
        try:
            container.seek(0)
        except av.error.FFmpegError:
            pass
    # variable frame rate: the spread of frame durations in presentation order
    vfr = False
    pts_sorted = sorted(set(pts_sample))
    deltas = [b - a for a, b in zip(pts_sorted, pts_sorted[1:]) if b > a]
    if len(deltas) >= 8:
        med = statistics.median(deltas)
        if med > 0:
            off = sum(1 for d in deltas if abs(d - med) > 0.25 * med)
            vfr = off > 0.1 * len(deltas)
            if not fps:
                fps = 1.0 / med
    if not fps:
        fps = 25.0
        warnings.append("the frame rate is missing from the file; assumed 25 fps")

    if full_index and not duration and pts_sorted:
        duration = pts_sorted[-1] - start + 1.0 / fps

    truncated = False
    declared: float | None = None
    if first_missing is not None:
        readable = max(0.0, first_missing - start)
        if present == 0 or readable <= 0:
            raise VideoError(f"{p} is truncated: its index lists {n_index} frames but the file ends before the "
                             "first one. Copy the file again (the copy or download did not finish).")
        if readable < duration - 0.5 / fps:
            truncated, declared = True, duration
            warnings.append(truncation_warning(readable, duration))
            duration = readable

    frame_count = int(stream.frames or 0)
    exact = frame_count > 0
    if truncated:
        frame_count, exact = present, True
    if not exact and full_index:
        frame_count, exact = n_index, True
    if not exact:
        frame_count = max(1, int(round(duration * fps)))
    if not duration and frame_count:
        duration = frame_count / fps
    if duration <= 0:
        warnings.append("the duration is missing from the file; it was not measured")

    key_interval: float | None = None
    key_count: int | None = None
    if len(key_times) >= 2:
        ks = sorted(key_times)
        key_interval = (ks[-1] - ks[0]) / (len(ks) - 1)
        key_count = len(ks) if n_index > 1 else None
    elif len(key_times) == 1 and full_index:
        key_interval, key_count = max(duration, 1.0 / fps), 1

    coded_w, coded_h = int(cc.width or 0), int(cc.height or 0)
    rotation = 0
    pix_fmt = cc.pix_fmt or "" if cc else ""
    if decode_first_frame:
        frame = _first_frame(container, stream, p)
        rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
        coded_w, coded_h = frame.width, frame.height
        pix_fmt = frame.format.name
    if coded_w <= 0 or coded_h <= 0:
        raise VideoError(f"{p} has a video stream without a picture size ({codec}); re-export it as mp4 (H.264).")
    width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)

    audio = container.streams.audio[0] if container.streams.audio else None
    return VideoInfo(
        path=str(p),
        size_bytes=p.stat().st_size,
        container=container.format.name or "",
        codec=codec,
        duration=round(duration, 6),
        fps=fps,
        frame_count=frame_count,
        frame_count_exact=exact,
        width=width,
        height=height,
        coded_width=coded_w,
        coded_height=coded_h,
        rotation=rotation,
        pix_fmt=pix_fmt,
        variable_frame_rate=vfr,
        keyframe_interval=round(key_interval, 6) if key_interval else None,
        keyframe_count=key_count,
        has_audio=audio is not None,
        audio_codec=(audio.codec_context.name if audio is not None and audio.codec_context else None),
        start_time=start,
        bit_rate=int(container.bit_rate) if container.bit_rate else None,
        warnings=warnings,
        truncated=truncated,
        declared_duration=round(declared, 6) if declared is not None else None,
    )


def _first_frame(container: Any, stream: Any, p: Path) -> Any:
    import av

    from core.media.decode import run_with_watchdog

    def first() -> Any:
        container.seek(0)
        for frame in container.decode(stream):
            return frame
        return None

    try:
        frame = run_with_watchdog(first, timeout_s=60.0, what=f"decoding the first frame of {p}")
    except av.error.FFmpegError as exc:
        raise VideoError(
            f"{p} could not be decoded ({_first_line(exc)}): the file is damaged or its codec is missing from "
            "this FFmpeg build. Re-export it as mp4 (H.264)."
        ) from exc
    if frame is None:
        raise VideoError(
            f"{p} has a video stream but no frame could be decoded (truncated or empty stream); "
            "copy the file again or re-export it."
        )
    return frame
