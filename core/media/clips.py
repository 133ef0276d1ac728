"""Clips: a stretch of a video written as a video file of its own, a contact sheet of its frames, and a
"highlights" file joining several stretches. PyAV (FFmpeg's libraries), as everywhere in core/media.

How a stretch is written (`export_clip`, `mode="auto"`):
- **copy** when the stretch starts on a key frame, or within `tolerance` seconds of one (then the clip
  starts at that key frame): the packets are copied as they are (no quality lost, about as fast as the
  disk). Its start is the key frame's time; its end is the first frame at or after `end` plus at most the
  few frames the last shown frames refer to (B-frame reordering), so a copy is exact at the start within
  `tolerance` and within a few frames at the end.
- **re-encode** otherwise (H.264 + AAC): frame-accurate. The clip's first frame is the frame shown at
  `start`, its length `end - start` within a frame.
Re-encoding only the head up to the next key frame and copying the rest ("smart" cutting) is not done: the
two halves need identical encoder parameters, which a generic source does not give.

`export_highlights` joins stretches by re-encoding them into one stream: one encoder, one clock, so the
timestamps run on without a gap and the length is the sum of the stretches. Audio is cut sample-exact and
padded with silence where the source has none, so sound stays in step with the pictures across the joins.

Every written file is probed: the result says the method used and the start, end and length of what was
written. A file is written under a temporary name in the destination folder and renamed when complete.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from core.events import CancelToken, Progress, report
from core.media.avopen import open_input
from core.media.errors import Cancelled, VideoError
from core.media.probe import VideoInfo, probe_video

MODES = ("auto", "copy", "re-encode")
KEYFRAME_TOLERANCE_S = 0.25
CLIP_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
SHEET_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
# codecs that can be copied into an mp4/mov file as they are (matroska takes almost anything)
MP4_VIDEO = {"h264", "hevc", "mpeg4", "av1", "vp9", "mpeg2video", "mjpeg"}
MP4_AUDIO = {"aac", "mp3", "opus", "ac3", "eac3", "alac", "flac"}
OUT_TIME_BASE = Fraction(1, 90000)
KEYFRAME_SEARCH_S = 60.0  # how far past a time the next key frame is looked for


class ClipError(VideoError):
    """A clip, contact sheet or highlights file cannot be made; the message names the cause and the fix."""


@dataclass
class ClipResult:
    """What `export_clip` / `export_highlights` wrote. Times in seconds of the source video.

    method: "copy" (packets copied) or "re-encode"; reason: why, in plain words.
    start, end: the stretch of the source the file holds (probed); duration: the file's length (probed).
    keyframe: the key frame a copy starts at (None for a re-encode).
    segments: for highlights, each stretch as {"start", "end", "at"} (`at`: where it begins in the file).
    """

    path: str
    method: str
    reason: str
    requested_start: float
    requested_end: float
    start: float
    end: float
    duration: float
    size_bytes: int
    frames: int
    has_audio: bool
    keyframe: float | None = None
    segments: list[dict[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClipResult":
        """The ClipResult stored by `to_dict`."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class SheetResult:
    """A contact sheet: the image written, the time of the frame in each tile (seconds of the source), the grid."""

    path: str
    times: list[float]
    columns: int
    rows: int
    tile_width: int
    tile_height: int
    width: int
    height: int
    size_bytes: int

    @property
    def tiles(self) -> int:
        """How many frames the sheet shows."""
        return len(self.times)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SheetResult":
        """The SheetResult stored by `to_dict`."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})


# ---------------------------------------------------------------------------------------------- helpers

def stamp(seconds: float) -> str:
    """Seconds as m:ss.s (h:mm:ss.s past an hour): the times written on contact sheets and in messages."""
    tenths = int(round(max(0.0, seconds) * 10))
    whole, frac = divmod(tenths, 10)
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}.{frac}" if h else f"{m}:{s:02d}.{frac}"


def _av() -> Any:
    """The PyAV module, or ClipError with the fix when FFmpeg's libraries are missing."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - PyAV is a dependency; a broken install lands here
        raise ClipError("Clips need FFmpeg's libraries for Python (the PyAV package), which are not installed "
                        f"or cannot load ({exc}).", "Install them with `.venv/bin/pip install av` "
                        "(or run `bash vlscope.sh start` again).") from None
    return av


def _encoder(av: Any, name: str) -> str:
    """`name` when this FFmpeg build can encode it, else ClipError naming the fix."""
    try:
        av.codec.Codec(name, "w")
    except (ValueError, av.error.FFmpegError):
        raise ClipError(f"This FFmpeg build has no {name} encoder, which clips are written with.",
                        "Install the PyAV wheel from PyPI (it includes it): `.venv/bin/pip install --force-reinstall "
                        "av`.") from None
    return name


def check_stretch(info: VideoInfo, start: float, end: float) -> tuple[float, float]:
    """(start, end) checked against the video: ClipError when it is empty, reversed or outside the video.

    An end a frame past the video's end (rounding) is taken as the end of the video.
    """
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ClipError("The stretch has a start or end that is not a number.", "Give times such as 3:15 or 195.")
    if end <= start:
        raise ClipError(f"The stretch ends ({stamp(end)}) before or when it starts ({stamp(start)}).",
                        "Give an end after the start.")
    if start < 0:
        raise ClipError(f"The stretch starts before the video does ({stamp(start)}).", "Give a start of 0:00 or later.")
    duration = info.duration
    if duration <= 0:
        raise ClipError("The length of the video is unknown, so a stretch of it cannot be cut.",
                        "Re-export the video as mp4 (H.264) and try again.")
    if start >= duration:
        raise ClipError(f"The stretch starts at {stamp(start)}, after the end of the video ({stamp(duration)}).",
                        f"Give a start before {stamp(duration)}.")
    slack = 0.05 + 1.0 / max(info.fps, 1.0)
    if end > duration + slack:
        raise ClipError(f"The stretch ends at {stamp(end)}, after the end of the video ({stamp(duration)}).",
                        f"Give an end at or before {stamp(duration)}.")
    return float(start), float(min(end, duration))


def check_output(dst: str | os.PathLike[str], formats: dict[str, str], src: str | os.PathLike[str] | None = None,
                 what: str = "clip") -> tuple[Path, str]:
    """(path, format) of a file to write: ClipError when its type is not supported or its folder is not writable."""
    p = Path(dst).expanduser()
    suffix = p.suffix.lower()
    first = sorted(formats)[0] if ".mp4" not in formats else ".mp4"
    if p.is_dir():
        raise ClipError(f"{p} is a folder.", f"Give a file name for the {what}, e.g. {p / ('clip' + first)}.")
    if suffix not in formats:
        kinds = ", ".join(sorted(formats))
        raise ClipError(f"A {what} cannot be written as {p.name!r}: the file type {suffix or '(none)'} is not one "
                        f"of {kinds}.", f"Name the file with one of {kinds}.")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise ClipError(f"The folder {folder} does not exist, so the {what} cannot be written there.",
                        "Create the folder first or choose another one.")
    if not os.access(folder, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ClipError(f"The {what} cannot be written to {p}: no permission to write there.",
                        "Choose a folder you can write to.")
    trial = folder / f".vlscope-write-test-{os.getpid()}-{threading.get_ident()}"
    try:  # a read-only disk or a special folder (/proc) refuses even where permissions allow
        trial.open("wb").close()
        trial.unlink()
    except OSError as exc:
        raise ClipError(f"The {what} cannot be written to {p} ({exc.strerror or exc}).",
                        "Choose a folder you can write to.") from None
    if src is not None and p.exists() and p.resolve() == Path(src).resolve():
        raise ClipError(f"The {what} would overwrite the video it is cut from ({p.name}).", "Give another file name.")
    return p, formats[suffix]


def _part(path: Path) -> Path:
    """A temporary name beside `path`, one per writer (two exports of one stretch at once do not collide)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.part")


def _write_error(exc: BaseException, path: Path, what: str) -> ClipError:
    return ClipError(f"The {what} could not be written to {path} ({str(exc).strip()[:200] or type(exc).__name__}).",
                     "Check that the disk has room and the folder is writable, or choose another one.")


def _info(src: str | os.PathLike[str], info: VideoInfo | None) -> VideoInfo:
    return info if info is not None else probe_video(src)


def _rate(stream: Any, info: VideoInfo) -> Fraction:
    for value in (stream.average_rate, stream.guessed_rate):
        try:
            if value and float(value) > 0:
                return Fraction(value).limit_denominator(1001 * 1000)
        except (TypeError, ZeroDivisionError):
            continue
    return Fraction(info.fps).limit_denominator(1001)


def _check_cancel(cancel: CancelToken | None, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} was cancelled")


# ---------------------------------------------------------------------------------------------- key frames

def keyframes_around(src: str | os.PathLike[str], t: float, info: VideoInfo | None = None) -> tuple[float | None, float | None]:
    """(the last key frame at or before `t`, the first key frame after `t`), in seconds; None where there is none.

    Reads packets (no decoding) from the key frame before `t` to the one after it: at most one key-frame
    interval (and no further than KEYFRAME_SEARCH_S past `t`).
    """
    _av()
    info = _info(src, info)
    st0 = info.start_time or 0.0
    container = open_input(src)
    try:
        stream = container.streams.video[0]
        tb = stream.time_base
        seek_before(container, stream, t, st0)
        before: float | None = None
        after: float | None = None
        for packet in container.demux(stream):
            if packet.pts is None or not packet.is_keyframe:
                continue
            kt = float(packet.pts * tb) - st0
            if kt <= t + 1e-6:
                before = kt
            else:
                after = kt
                break
            if kt > t + KEYFRAME_SEARCH_S:
                break
        return before, after
    finally:
        container.close()


def seek_before(container: Any, stream: Any, t: float, st0: float = 0.0, scan_packets: int = 2000) -> None:
    """Seek `container` so that demuxing `stream` from here meets a key frame at or before `t` (seconds from the
    video's start) first. Some containers (MPEG-TS) land past the key frame asked for: those are sought
    further back, down to the start of the file."""
    import av

    tb = stream.time_base
    for back in (0.0, 5.0, 30.0, 300.0, None):
        target = 0 if back is None else max(0, int((max(0.0, t - back) + st0) / tb))
        try:
            container.seek(target, stream=stream, backward=True)
        except av.error.FFmpegError:
            target = 0
            container.seek(0)
        if back is None or target == 0:
            return
        first: float | None = None
        for n, packet in enumerate(container.demux(stream)):
            if n >= scan_packets:
                break
            if packet.pts is not None and packet.is_keyframe:
                first = float(packet.pts * tb) - st0
                break
        if first is not None and first <= t + 1e-6:
            container.seek(target, stream=stream, backward=True)  # the same landing place again
            return


def _copy_plan(info: VideoInfo, src: str | os.PathLike[str], start: float, tolerance: float,
               mode: str, fmt: str, has_audio_stream: bool, audio_codec: str | None) -> tuple[float | None, str]:
    """(the key frame to copy from, or None to re-encode; the reason in plain words)."""
    codec = (info.codec or "").lower()
    if fmt in ("mp4", "mov") and codec not in MP4_VIDEO:
        return None, f"its {info.codec} pictures cannot be copied into this file type, so they were re-encoded"
    if fmt in ("mp4", "mov") and has_audio_stream and (audio_codec or "").lower() not in MP4_AUDIO:
        return None, (f"its {audio_codec} sound would not play from this file type as it is, so the stretch was "
                      "re-encoded")
    before, after = keyframes_around(src, start, info)
    if mode == "copy":
        if before is None:
            return None, "no key frame was found before the start, so the stretch was re-encoded"
        return before, (f"copied from the key frame at {stamp(before)}, {start - before:.2f} s before the start "
                        "asked for (copy chosen)")
    if before is not None and start - before <= tolerance:
        if start - before < 1e-3:
            return before, "the stretch starts on a key frame, so its packets were copied as they are"
        return before, (f"the stretch starts {start - before:.2f} s after a key frame (within {tolerance:.2f} s), "
                        "so it was copied from that key frame")
    if after is not None and after - start <= tolerance and after < info.duration:
        return after, (f"the stretch starts {after - start:.2f} s before a key frame (within {tolerance:.2f} s), "
                       "so it was copied from that key frame")
    near = f"; the nearest key frame is at {stamp(before)}" if before is not None else ""
    return None, f"the stretch does not start on a key frame{near}, so it was re-encoded to start exactly"


# ---------------------------------------------------------------------------------------------- copy

class _CannotCopy(Exception):
    """The packets cannot be copied as they are (no timestamps, a muxer refusing them): re-encode instead."""


def _copy(src: str | os.PathLike[str], tmp: Path, fmt: str, info: VideoInfo, keyframe: float, end: float,
          progress: Progress | None, cancel: CancelToken | None) -> int:
    """Copy the packets from the key frame at `keyframe` to `end` into `tmp`; returns the video packets written."""
    av = _av()
    st0 = info.start_time or 0.0
    inp = open_input(src)
    written = 0
    complete = False
    try:
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vtb = vin.time_base
        try:
            out = av.open(str(tmp), "w", format=fmt, options=_container_options(fmt))
        except (OSError, av.error.FFmpegError) as exc:
            raise _write_error(exc, tmp, "clip") from None
        try:
            try:
                vout = out.add_stream_from_template(vin)
                aout = out.add_stream_from_template(ain) if ain is not None else None
            except (ValueError, av.error.FFmpegError) as exc:
                raise _CannotCopy(str(exc)) from None
            kf_pts = int(round((keyframe + st0) / vtb))
            seek_before(inp, vin, keyframe, st0)
            voff: int | None = None
            aoff = int(round((keyframe + st0) / ain.time_base)) if ain is not None else 0
            pending: list[Any] = []  # packets shown after `end` that later packets may refer to
            vdone, adone = False, ain is None
            span = max(end - keyframe, 1e-3)
            streams = [vin] + ([ain] if ain is not None else [])
            for packet in _with_dts(inp.demux(*streams), vin):
                _check_cancel(cancel, "making the clip")
                if packet.dts is None and packet.pts is None:
                    continue  # a demuxer's flush packet
                if packet.stream is vin:
                    if vdone:
                        continue
                    if packet.pts is None or packet.dts is None:
                        raise _CannotCopy("video packets without timestamps")
                    if voff is None:
                        if not packet.is_keyframe or packet.pts < kf_pts - 1:
                            continue
                        voff = packet.pts
                    if float(packet.dts * vtb) - st0 >= end:
                        vdone = True  # every frame shown before `end` is decoded before this one
                    elif packet.pts >= voff:  # leading frames of an open GOP refer to the GOP before: dropped
                        shown_after = float(packet.pts * vtb) - st0 >= end
                        packet.pts -= voff
                        packet.dts -= voff
                        packet.stream = vout
                        if shown_after:
                            pending.append(packet)
                        else:
                            for held in pending:
                                out.mux(held)
                                written += 1
                            pending = []
                            out.mux(packet)
                            written += 1
                            report(progress, (float((packet.pts + voff) * vtb) - st0 - keyframe) / span,
                                   "copying the stretch", "clip")
                elif not adone and voff is not None:
                    if packet.pts is None:
                        continue
                    at = float(packet.pts * packet.time_base) - st0
                    if at >= end:
                        adone = True
                    elif at >= keyframe - 1e-6:
                        packet.pts -= aoff
                        if packet.dts is not None:
                            packet.dts -= aoff
                        packet.stream = aout
                        out.mux(packet)
                if vdone and adone:
                    break
            complete = True
        except av.error.FFmpegError as exc:
            raise _CannotCopy(str(exc)) from None
        finally:
            try:
                out.close()
            except av.error.FFmpegError as exc:  # the trailer could not be written
                if complete:
                    raise _CannotCopy(str(exc)) from None
    finally:
        inp.close()
    if written == 0:
        raise _CannotCopy("no picture was copied")
    return written


def _with_dts(packets: Iterator[Any], video: Any) -> Iterator[Any]:
    """The packets with decoding times filled in where the demuxer left them out (Matroska does for the first
    frames after the start or a seek when frames are reordered): MP4 needs one on every packet. The frames
    before the first known time get times a frame apart before it, in decoding order."""
    held: list[Any] = []
    last: int | None = None
    for packet in packets:
        if packet.stream is not video or packet.pts is None:
            yield packet
            continue
        if packet.dts is None:
            if last is None:
                held.append(packet)
                continue
            if last + 1 > packet.pts:
                raise _CannotCopy("video packets without decoding times")
            packet.dts = last + 1
        elif held:
            step = max(1, int(packet.duration or held[-1].duration or 1))
            for n, early in enumerate(held):
                early.dts = packet.dts - (len(held) - n) * step
                if early.dts > early.pts:
                    raise _CannotCopy("video packets without decoding times")
                yield early
            held = []
        last = packet.dts
        yield packet
    for n, early in enumerate(held):  # no decoding time at all: frames in order (nothing reordered) or no copy
        if n and early.pts <= held[n - 1].pts:
            raise _CannotCopy("video packets without decoding times")
        early.dts = early.pts
        yield early


def _container_options(fmt: str) -> dict[str, str]:
    return {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}


# ---------------------------------------------------------------------------------------------- re-encode

class _Encoder:
    """One H.264 (+ AAC) output that stretches of the source are appended to on one clock."""

    def __init__(self, av: Any, inp: Any, out: Any, info: VideoInfo) -> None:
        self.av, self.inp, self.out, self.info = av, inp, out, info
        self.vin = inp.streams.video[0]
        self.vin.thread_type = "AUTO"
        self.ain = inp.streams.audio[0] if inp.streams.audio else None
        rate = _rate(self.vin, info)
        self.vout = out.add_stream(_encoder(av, "libx264"), rate=rate)
        self.rotation = info.rotation if info.rotation in (90, 180, 270) else 0
        width, height = info.width, info.height  # displayed: a rotated source is turned upright
        self.vout.width, self.vout.height = max(2, width // 2 * 2), max(2, height // 2 * 2)
        self.vout.pix_fmt = "yuv420p"
        self.vout.time_base = OUT_TIME_BASE
        self.vout.codec_context.time_base = OUT_TIME_BASE
        gop = max(1, int(round(2 * float(rate))))
        self.vout.options = {"preset": "veryfast", "crf": "20", "g": str(gop)}
        self.aout = None
        self.sample_rate = 0
        if self.ain is not None:
            cc = self.ain.codec_context
            self.sample_rate = int(cc.sample_rate or 48000)
            layout = cc.layout.name if cc.layout is not None else "stereo"
            if cc.channels and cc.channels > 2 and layout not in ("5.1", "5.1(side)", "7.1"):
                layout = "stereo"
            self.layout = layout
            self.aout = out.add_stream(_encoder(av, "aac"), rate=self.sample_rate, layout=layout)
            self.aout.bit_rate = 160_000
            self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.sample_rate)
        self.video_pts = -1
        self.audio_samples = 0
        self.frames = 0
        self.bad_packets = 0

    # -- video
    def _put_video(self, frame: Any, at: float) -> None:
        pts = max(self.video_pts + 1, int(round(at / OUT_TIME_BASE)))
        self.video_pts = pts
        if self.rotation:
            from core.media.decode import rotate_image

            upright = rotate_image(frame.to_ndarray(format="rgb24"), self.rotation)
            frame = self.av.VideoFrame.from_ndarray(upright, format="rgb24")
        else:
            frame.pict_type = self.av.video.frame.PictureType.NONE  # no key frame forced where the source had one
        frame.pts = pts
        frame.time_base = OUT_TIME_BASE
        for packet in self.vout.encode(frame):
            self.out.mux(packet)
        self.frames += 1

    # -- audio
    def _put_audio(self, planes: np.ndarray) -> None:
        if planes.shape[1] == 0:
            return
        frame = self.av.AudioFrame.from_ndarray(np.ascontiguousarray(planes, dtype=np.float32), format="fltp",
                                                layout=self.layout)
        frame.sample_rate = self.sample_rate
        frame.pts = self.audio_samples
        frame.time_base = Fraction(1, self.sample_rate)
        for packet in self.aout.encode(frame):
            self.out.mux(packet)
        self.audio_samples += planes.shape[1]

    def _silence(self, samples: int) -> None:
        channels = self.aout.codec_context.channels or 2
        while samples > 0:
            n = min(samples, self.sample_rate)
            self._put_audio(np.zeros((channels, n), dtype=np.float32))
            samples -= n

    def append(self, start: float, end: float, offset: float, progress: Progress | None,
               cancel: CancelToken | None, done_before: float, total: float) -> None:
        """Append the source's stretch [start, end) at `offset` seconds of the output."""
        av = self.av
        st0 = self.info.start_time or 0.0
        vin, ain = self.vin, self.ain
        seek_before(self.inp, vin, start, st0)
        held: Any = None  # the latest frame at or before `start`: the one shown at `start`
        first = True
        vdone = False
        # audio: samples [a_lo, a_hi) of the source, written from a_next on
        sr = self.sample_rate
        a_lo = int(round(start * sr)) if ain is not None else 0
        a_hi = a_lo + (int(round(end * sr)) - int(round(start * sr))) if ain is not None else 0
        a_next = a_lo
        adone = ain is None
        streams = [vin] + ([ain] if ain is not None else [])
        eps = 1e-6
        for packet in self.inp.demux(*streams):
            _check_cancel(cancel, "making the clip")
            is_video = packet.stream is vin
            if (is_video and vdone) or (not is_video and adone):
                continue
            try:
                frames = packet.decode()
            except (av.error.InvalidDataError, av.error.UndefinedError, av.error.PatchWelcomeError,
                    av.error.BugError):
                self.bad_packets += 1
                continue
            for frame in frames:
                if is_video:
                    if vdone or frame.time is None:
                        continue
                    t = float(frame.time) - st0
                    if t <= start + eps:
                        held = frame
                        continue
                    if held is not None:
                        self._put_video(held, offset)
                        held, first = None, False
                    if t >= end - eps:
                        vdone = True
                        continue
                    self._put_video(frame, offset + (0.0 if first else t - start))
                    first = False
                    report(progress, (done_before + t - start) / total, f"re-encoding: {stamp(t)} of {stamp(end)}",
                           "clip")
                else:
                    if adone:
                        continue
                    fs = int(round((float(frame.time) - st0) * sr)) if frame.time is not None else a_next
                    for part in self.resampler.resample(frame):
                        planes = part.to_ndarray()
                        n = planes.shape[1]
                        lo, hi = max(fs, a_next), min(fs + n, a_hi)
                        if hi > lo:
                            if lo > a_next:
                                self._silence(lo - a_next)  # the source has no sound here
                            self._put_audio(planes[:, lo - fs:hi - fs])
                            a_next = hi
                        fs += n
                    if fs >= a_hi:
                        adone = True
            if vdone and adone:
                break
        if held is not None:  # the stretch is shorter than a frame, or the video ended
            self._put_video(held, offset)
        if ain is not None and a_next < a_hi:
            self._silence(a_hi - a_next)

    def finish(self) -> None:
        for packet in self.vout.encode():
            self.out.mux(packet)
        if self.aout is not None:
            for packet in self.aout.encode():
                self.out.mux(packet)


def _reencode(src: str | os.PathLike[str], tmp: Path, fmt: str, info: VideoInfo, stretches: list[tuple[float, float]],
              progress: Progress | None, cancel: CancelToken | None) -> tuple[int, list[str]]:
    """Re-encode the stretches one after another into `tmp`; (frames written, warnings)."""
    av = _av()
    _encoder(av, "libx264")
    inp = open_input(src)
    warnings: list[str] = []
    complete = False
    try:
        try:
            out = av.open(str(tmp), "w", format=fmt, options=_container_options(fmt))
        except (OSError, av.error.FFmpegError) as exc:
            raise _write_error(exc, tmp, "clip") from None
        try:
            enc = _Encoder(av, inp, out, info)
            total = sum(e - s for s, e in stretches) or 1e-6
            offset = 0.0
            for s, e in stretches:
                enc.append(s, e, offset, progress, cancel, offset, total)
                offset += e - s
            enc.finish()
            complete = True
        except av.error.FFmpegError as exc:
            if isinstance(exc, OSError):  # PyAV's file errors (no room, no such folder) are OSErrors too
                raise _write_error(exc, tmp, "clip") from None
            raise ClipError(f"The video could not be re-encoded ({str(exc).strip()[:200]}).",
                            "The file may be damaged; re-export it as mp4 (H.264) and try again.") from None
        finally:
            try:
                out.close()
            except av.error.FFmpegError as exc:
                if complete:
                    raise _write_error(exc, tmp, "clip") from None
    finally:
        inp.close()
    if enc.bad_packets:
        warnings.append(f"{enc.bad_packets} damaged packet(s) of the video were skipped (their frames are missing).")
    if enc.frames == 0:
        raise ClipError("No frame of the video could be decoded in the stretch.",
                        "The file may be damaged there; re-export it as mp4 (H.264).")
    return enc.frames, warnings


# ---------------------------------------------------------------------------------------------- public calls

def _probe_written(path: Path) -> VideoInfo:
    try:
        return probe_video(path)
    except VideoError as exc:
        raise ClipError(f"The file written ({path.name}) cannot be read back: {exc}",
                        "Try the other method (copy or re-encode), or re-export the source as mp4 (H.264).") from None


def export_clip(src: str | os.PathLike[str], dst: str | os.PathLike[str], start: float, end: float,
                mode: str = "auto", tolerance: float = KEYFRAME_TOLERANCE_S, info: VideoInfo | None = None,
                progress: Progress | None = None, cancel: CancelToken | None = None) -> ClipResult:
    """Write the stretch [start, end] seconds of `src` to `dst` (.mp4, .m4v, .mov or .mkv) and return what was written.

    mode: "auto" copies when the start is within `tolerance` s of a key frame and re-encodes otherwise;
    "copy" always copies from the key frame at or before `start` (the clip may start up to a key-frame
    interval early); "re-encode" is always frame-accurate. ClipError (cause + fix) for a stretch outside
    the video, an end not after the start, a destination that cannot be written, a missing encoder.
    """
    if mode not in MODES:
        raise ClipError(f"Unknown clip method {mode!r}.", f"Choose one of {', '.join(MODES)}.")
    _av()
    info = _info(src, info)
    start, end = check_stretch(info, start, end)
    path, fmt = check_output(dst, CLIP_FORMATS, src)
    tmp = _part(path)
    keyframe: float | None = None
    reason = "re-encoding was asked for, to start exactly"
    if mode != "re-encode":
        has_audio = info.has_audio
        keyframe, reason = _copy_plan(info, src, start, tolerance, mode, fmt, has_audio, info.audio_codec)
    warnings: list[str] = []
    method = "copy" if keyframe is not None else "re-encode"
    try:
        if keyframe is not None:
            try:
                _copy(src, tmp, fmt, info, keyframe, end, progress, cancel)
            except _CannotCopy as exc:
                if mode == "copy":
                    raise ClipError(f"The stretch could not be copied as it is ({exc}).",
                                    "Choose re-encode instead.") from None
                tmp.unlink(missing_ok=True)
                keyframe, method = None, "re-encode"
                reason = f"copying the packets did not work ({exc}), so the stretch was re-encoded"
        if keyframe is None:
            _, warnings = _reencode(src, tmp, fmt, info, [(start, end)], progress, cancel)
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_error(exc, path, "clip") from None
    finally:
        tmp.unlink(missing_ok=True)
    written = _probe_written(path)
    first = keyframe if keyframe is not None else start
    report(progress, 1.0, "clip ready", "clip")
    return ClipResult(path=str(path), method=method, reason=reason, requested_start=start, requested_end=end,
                      start=round(first, 6), end=round(first + written.duration, 6), duration=written.duration,
                      size_bytes=path.stat().st_size, frames=written.frame_count, has_audio=written.has_audio,
                      keyframe=keyframe, warnings=warnings + written.warnings)


def export_highlights(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                      stretches: Iterable[tuple[float, float]], info: VideoInfo | None = None,
                      progress: Progress | None = None, cancel: CancelToken | None = None) -> ClipResult:
    """Join the stretches of `src` (in the order given) into one file at `dst`, re-encoded on one clock.

    The file's length is the sum of the stretches (within a frame); `segments` says where each begins in it.
    ClipError for no stretch, a bad stretch (named by its number), or a destination that cannot be written.
    """
    _av()
    info = _info(src, info)
    checked: list[tuple[float, float]] = []
    for n, (s, e) in enumerate(stretches, 1):
        try:
            checked.append(check_stretch(info, float(s), float(e)))
        except ClipError as exc:
            raise ClipError(f"Stretch {n}: {exc.cause}", exc.fix) from None
    if not checked:
        raise ClipError("No stretch was chosen for the highlights.", "Choose at least one stretch.")
    path, fmt = check_output(dst, CLIP_FORMATS, src, what="highlights file")
    tmp = _part(path)
    try:
        _, warnings = _reencode(src, tmp, fmt, info, checked, progress, cancel)
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_error(exc, path, "highlights file") from None
    finally:
        tmp.unlink(missing_ok=True)
    written = _probe_written(path)
    segments, at = [], 0.0
    for s, e in checked:
        segments.append({"start": round(s, 6), "end": round(e, 6), "at": round(at, 6)})
        at += e - s
    report(progress, 1.0, "highlights ready", "clip")
    reason = (f"{len(checked)} stretch(es) joined and re-encoded on one clock, so the timestamps run on without a gap"
              if len(checked) > 1 else "re-encoded to start exactly")
    return ClipResult(path=str(path), method="re-encode", reason=reason, requested_start=checked[0][0],
                      requested_end=checked[-1][1], start=checked[0][0], end=checked[-1][1],
                      duration=written.duration, size_bytes=path.stat().st_size, frames=written.frame_count,
                      has_audio=written.has_audio, segments=segments, warnings=warnings + written.warnings)


# ---------------------------------------------------------------------------------------------- contact sheet

def sheet_times(info: VideoInfo, start: float, end: float, tiles: int) -> list[float]:
    """The times a contact sheet of [start, end) shows: `tiles` evenly spaced from `start` on (fewer when the
    stretch has fewer frames)."""
    frames = max(1, int(math.floor((end - start) * max(info.fps, 1e-3) + 1e-6)))
    n = max(1, min(int(tiles), frames))
    step = (end - start) / n
    return [start + i * step for i in range(n)]


def _frames_at(src: str | os.PathLike[str], info: VideoInfo, times: list[float], size: tuple[int, int],
               cancel: CancelToken | None) -> Iterator[tuple[float, np.ndarray]]:
    """For each of `times` (ascending), (the time of the frame shown then, its RGB pixels at displayed `size`)."""
    av = _av()
    from core.media.decode import DecodeReport, _coded_size, decode_skipping, rotate_image

    st0 = info.start_time or 0.0
    rotation = info.rotation if info.rotation in (90, 180, 270) else 0
    w, h = _coded_size(size, rotation)
    gap = max(2.0 * (info.keyframe_interval or 2.0), 4.0)  # further than this: seek rather than decode through
    container = open_input(src)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames: Iterator[Any] | None = None
        prev: Any = None  # the latest frame at or before the current target
        ahead: Any = None  # a decoded frame past the current target
        report_ = DecodeReport()

        def at(frame: Any) -> float:
            return float(frame.time) - st0 if frame.time is not None else 0.0

        for t in times:
            _check_cancel(cancel, "making the contact sheet")
            pos = at(ahead) if ahead is not None else (at(prev) if prev is not None else None)
            if frames is None or pos is None or t - pos > gap:
                seek_before(container, stream, t, st0)
                frames = decode_skipping(container, stream, report_, info.fps, 0.0)
                prev, ahead = None, None
            if ahead is not None and at(ahead) <= t + 1e-6:
                prev, ahead = ahead, None
            while ahead is None:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except av.error.FFmpegError:
                    break
                if at(frame) <= t + 1e-6:
                    prev = frame
                else:
                    ahead = frame
            shown = prev if prev is not None else ahead
            if shown is None:
                raise ClipError(f"No frame of the video could be decoded near {stamp(t)}.",
                                "The file may be damaged there; re-export it as mp4 (H.264).")
            yield at(shown), rotate_image(shown.to_ndarray(format="rgb24", width=w, height=h), rotation)
    finally:
        container.close()


def _font(size: int) -> Any:
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "NotoSans-Regular.ttf",
                 "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def contact_sheet(src: str | os.PathLike[str], dst: str | os.PathLike[str], start: float, end: float,
                  tiles: int = 12, columns: int = 4, tile_width: int = 320, title: str | None = None,
                  info: VideoInfo | None = None, progress: Progress | None = None,
                  cancel: CancelToken | None = None) -> SheetResult:
    """Write a grid of `tiles` frames of [start, end) to `dst` (.jpg, .jpeg or .png), each with its time written under it.

    The tiles are evenly spaced from `start` (the first tile is the frame shown at `start`); a stretch with
    fewer frames gives fewer tiles. `title` (e.g. the file name and the stretch) is written above the grid.
    """
    from PIL import Image, ImageDraw

    info = _info(src, info)
    start, end = check_stretch(info, start, end)
    path, fmt = check_output(dst, SHEET_FORMATS, src, what="contact sheet")
    if tiles < 1 or columns < 1 or tile_width < 16:
        raise ClipError("A contact sheet needs at least one tile, one column and tiles at least 16 pixels wide.",
                        "Give larger numbers.")
    times = sheet_times(info, start, end, tiles)
    tw = int(tile_width) // 2 * 2
    th = max(2, int(round(tw * info.height / max(1, info.width))) // 2 * 2)
    cols = min(int(columns), len(times))
    rows = math.ceil(len(times) / cols)
    label_h = max(14, tw // 12)
    pad = max(4, tw // 40)
    font = _font(max(10, int(label_h * 0.75)))
    title_h = label_h + pad if title else 0
    width = cols * tw + (cols + 1) * pad
    height = title_h + rows * (th + label_h) + (rows + 1) * pad
    sheet = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad), title, fill=(235, 235, 235), font=font)
    shown: list[float] = []
    for i, (t, rgb) in enumerate(_frames_at(src, info, times, (tw, th), cancel)):
        r, c = divmod(i, cols)
        x = pad + c * (tw + pad)
        y = title_h + pad + r * (th + label_h + pad)
        sheet.paste(Image.fromarray(rgb), (x, y))
        draw.text((x + 2, y + th + 1), stamp(t), fill=(255, 255, 255), font=font)
        shown.append(round(t, 6))
        report(progress, (i + 1) / len(times), f"contact sheet: frame {i + 1} of {len(times)}", "sheet")
    tmp = _part(path)
    try:
        sheet.save(tmp, fmt, **({"quality": 88} if fmt == "JPEG" else {}))
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_error(exc, path, "contact sheet") from None
    finally:
        tmp.unlink(missing_ok=True)
    return SheetResult(str(path), shown, cols, rows, tw, th, width, height, path.stat().st_size)
