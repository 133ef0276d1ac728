"""Sampling a video for Qwen3-VL: a `SamplingPlan` (the rules of qwen-vl-utils, as settings), the
`FrameSchedule` it gives for one video (which source frames, at which size), and `sample_video`,
which decodes them by the fastest path and streams them in batches.

Rules (qwen-vl-utils / the Qwen3-VL processor): frames = duration x fps, clamped to
[min_frames, max_frames] and to the frames available, rounded down to a multiple of 2; frame
numbers evenly spaced over the window (linspace, rounded); each frame resized to sides that are
multiples of 32 within a per-frame pixel cap of min(max_pixels, total_pixels / frames) (never below
1.05 x min_pixels), keeping the aspect ratio.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Callable, Iterator

import numpy as np

from core.media.decode import DecodedFrame, DecodeReport, Watched, opencv_select, pyav_select
from core.media.errors import VideoError
from core.media.probe import VideoInfo, truncation_warning

FACTOR = 32  # patch 16 x spatial merge 2: one visual token covers 32x32 pixels
TEMPORAL = 2  # frames per temporal patch: each pair of frames shares its tokens


@dataclass
class SamplingPlan:
    """How to sample a video for the model. Defaults are Qwen3-VL's (hub processor / qwen-vl-utils).

    fps: target samples per second. min_frames/max_frames: bounds on the frame count (made even).
    start/end: a time window in seconds (None: the whole video).
    min_pixels/max_pixels: per-frame pixel bounds (128 and 768 visual tokens of 32x32 pixels).
    total_pixels: pixel budget over ALL frames (the processor's video size.longest_edge).
    Per frame the cap is max(min(max_pixels, total_pixels / frames), 1.05 x min_pixels), as in
    qwen-vl-utils; the processor applies the same rule given size.shortest_edge = min_pixels.
    mode: "auto" (fastest path), "dense" (decode every frame, exact frame numbers) or "keyframes".
    """

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 768
    start: float | None = None
    end: float | None = None
    min_pixels: int = 128 * FACTOR * FACTOR
    max_pixels: int = 768 * FACTOR * FACTOR
    total_pixels: int = 25_165_824
    mode: str = "auto"

    def __post_init__(self) -> None:
        if not self.fps or self.fps <= 0:
            raise VideoError(f"sampling fps must be > 0, got {self.fps}; use e.g. 2 (Qwen3-VL's default) or 0.5.")
        if self.min_frames < 1 or self.max_frames < 2:
            raise VideoError("min_frames must be >= 1 and max_frames >= 2 (the model takes frames in pairs).")
        if self.min_frames > self.max_frames:
            raise VideoError(f"min_frames ({self.min_frames}) is above max_frames ({self.max_frames}); lower it.")
        if self.start is not None and self.start < 0:
            raise VideoError(f"the window start must be >= 0 s, got {self.start}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise VideoError(f"the window end ({self.end} s) must be after its start ({self.start} s).")
        if self.max_pixels < FACTOR * FACTOR or self.min_pixels > self.max_pixels:
            raise VideoError("per-frame pixels: need 1024 <= min_pixels <= max_pixels.")
        if self.max_pixels > 768 * FACTOR * FACTOR:
            raise VideoError("max_pixels above 786,432 (768 visual tokens) per frame is beyond the Qwen3-VL "
                             "processor's per-frame ceiling; lower it.")
        if self.total_pixels < FACTOR * FACTOR * TEMPORAL:
            raise VideoError("total_pixels is too small for even two 32x32 frames.")
        if self.mode not in ("auto", "dense", "keyframes"):
            raise VideoError(f"sampling mode must be auto, dense or keyframes, got {self.mode!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field (also the cache parameters of sampled results)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamplingPlan":
        """The plan stored by `to_dict`."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class FrameSchedule:
    """Which frames a plan takes from one video and at which size; computed without decoding.

    indices: source frame numbers (increasing). times: their seconds (index / fps).
    width/height: the size every sampled frame is resized to (multiples of 32, display orientation).
    mode: the decode path chosen ("dense" or "keyframes") and `reason` why.
    """

    indices: list[int]
    times: list[float]
    source_fps: float
    total_frames: int
    width: int
    height: int
    window: tuple[float, float]
    mode: str
    reason: str
    pixels_per_frame_cap: int
    warnings: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        """Number of frames kept."""
        return len(self.indices)

    @property
    def effective_fps(self) -> float:
        """Frames kept per second of the window."""
        span = self.window[1] - self.window[0]
        return self.frames / span if span > 0 else 0.0

    @property
    def timestamp_resolution(self) -> float:
        """Seconds between two `<t seconds>` marks the model sees (2 / effective fps)."""
        return TEMPORAL / self.effective_fps if self.effective_fps else 0.0

    def pair_timestamps(self) -> list[float]:
        """The `<t seconds>` values: mean time of each pair of frames (last frame repeated if odd)."""
        idx = list(self.indices)
        if len(idx) % TEMPORAL:
            idx.append(idx[-1])
        t = [i / self.source_fps for i in idx]
        return [(t[k] + t[k + 1]) / 2 for k in range(0, len(t), TEMPORAL)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (with the derived figures)."""
        d = asdict(self)
        d.update(frames=self.frames, effective_fps=self.effective_fps, timestamp_resolution=self.timestamp_resolution)
        return d


def smart_resize_video(num_frames: int, height: int, width: int, min_pixels: int, max_pixels: int,
                       factor: int = FACTOR, temporal: int = TEMPORAL) -> tuple[int, int]:
    """(height, width), multiples of `factor`, with frames x height x width within [min_pixels, max_pixels].

    Same arithmetic as the Qwen3-VL video processor's resize, so frames resized to this size pass
    through the processor unchanged.
    """
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > 200:
        raise VideoError(f"the frame's aspect ratio {max(height, width) / min(height, width):.0f}:1 is above the "
                         "model's limit of 200:1; crop the video.")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal) * temporal
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def frame_count_for(duration: float, available: int, plan: SamplingPlan) -> int:
    """Frames a plan keeps from a window of `duration` seconds holding `available` frames (qwen-vl-utils' rule)."""
    lo = math.ceil(plan.min_frames / TEMPORAL) * TEMPORAL
    hi = math.floor(min(plan.max_frames, available) / TEMPORAL) * TEMPORAL
    n = duration * plan.fps
    n = min(max(n, lo), hi, available)
    n = math.floor(n / TEMPORAL) * TEMPORAL
    return int(n)


def schedule_frames(info: VideoInfo, plan: SamplingPlan) -> FrameSchedule:
    """The FrameSchedule of `plan` on the probed video (no decoding); VideoError when the window is empty."""
    fps = info.fps
    total = max(1, info.frame_count)
    duration = info.duration if info.duration > 0 else total / fps
    warnings: list[str] = []
    if info.truncated and info.declared_duration:
        warnings.append(truncation_warning(info.duration, info.declared_duration))
    start = plan.start or 0.0
    end = duration if plan.end is None else min(plan.end, duration)
    if start >= duration:
        raise VideoError(f"the window starts at {start:g} s but the video lasts {duration:.2f} s; pick an earlier start.")
    if plan.end is not None and plan.end > duration + 1.0 / fps:
        warnings.append(f"the window end {plan.end:g} s is past the video's end; used {duration:.2f} s")
    first = min(total - 1, math.ceil(start * fps - 1e-9))
    last = min(total - 1, max(first, math.floor(end * fps + 1e-9)))
    available = last - first + 1
    if available < TEMPORAL:
        raise VideoError(f"the window {start:g}-{end:g} s holds {available} frame(s); the model needs at least 2. "
                         "Widen the window.")
    n = frame_count_for((last - first + 1) / fps, available, plan)
    indices = [int(i) for i in np.linspace(first, last, n).round().astype(int)]
    cap = max(min(plan.max_pixels, plan.total_pixels // n), int(plan.min_pixels * 1.05))
    height, width = smart_resize_video(n, info.height, info.width, plan.min_pixels, cap * n)

    interval = (last - first) / fps / max(1, n - 1)
    kf = info.keyframe_interval
    if plan.mode == "dense":
        mode, reason = "dense", "asked for dense decoding"
    elif plan.mode == "keyframes":
        mode, reason = "keyframes", "asked for key frames only"
    elif kf and interval > kf * 1.0 and (info.keyframe_count is None or info.keyframe_count >= n):
        mode, reason = "keyframes", f"samples every {interval:.2f} s, key frames every {kf:.2f} s: key frames only"
    else:
        mode = "dense"
        reason = (f"samples every {interval:.2f} s, key frames every {kf:.2f} s: every frame decoded, kept ones converted"
                  if kf else "key frame interval unknown: every frame decoded, kept ones converted")
    return FrameSchedule(
        indices=indices, times=[i / fps for i in indices], source_fps=fps, total_frames=total,
        width=int(width), height=int(height), window=(first / fps, (last + 1) / fps), mode=mode, reason=reason,
        pixels_per_frame_cap=int(cap), warnings=warnings,
    )


@dataclass
class SampledFrame:
    """One sampled frame: source frame number, seconds, RGB pixels, and how far (s) it moved from its target."""

    index: int
    time: float
    image: np.ndarray
    shift: float = 0.0


@dataclass
class SampledVideo:
    """The frames of a schedule, in order, with what happened while decoding."""

    frames: list[SampledFrame]
    schedule: FrameSchedule
    warnings: list[str] = field(default_factory=list)
    complete: bool = True
    decoded: int = 0
    largest_shift: float = 0.0

    @property
    def indices(self) -> list[int]:
        """Source frame numbers of the kept frames."""
        return [f.index for f in self.frames]

    @property
    def max_shift(self) -> float:
        """Largest distance (s) between a sampled frame and its target time (0 for dense decoding)."""
        return max([abs(f.shift) for f in self.frames] + [self.largest_shift])

    def to_video_part(self, plan: SamplingPlan | None = None, cache_key: str | None = None) -> Any:
        """A core.vlm VideoPart of these frames, carrying the plan's pixel budget and the real frame numbers."""
        from core.vlm.types import VideoPart

        if not self.frames:
            raise VideoError("no frame could be decoded from this video; it may be damaged. Re-export it.")
        total_px = plan.total_pixels if plan else None
        min_total = plan.min_pixels if plan else None
        return VideoPart(frames=[f.image for f in self.frames], frame_indices=[f.index for f in self.frames],
                         source_fps=self.schedule.source_fps, total_frames=self.schedule.total_frames,
                         max_pixels_total=total_px, min_pixels_total=min_total, cache_key=cache_key)

    def summary(self) -> dict[str, Any]:
        """A JSON-able description (no pixels)."""
        return {"frames": len(self.frames), "indices": self.indices, "times": [f.time for f in self.frames],
                "shifts": [f.shift for f in self.frames], "mode": self.schedule.mode, "complete": self.complete,
                "warnings": self.warnings, "width": self.schedule.width, "height": self.schedule.height}


def iter_samples(info: VideoInfo, schedule: FrameSchedule, stall_s: float = 60.0, total_s: float | None = None,
                 cancel: threading.Event | None = None, size: tuple[int, int] | None = None,
                 backend: str = "auto", warnings: list[str] | None = None,
                 report: DecodeReport | None = None, processes: Any = None) -> Iterator[SampledFrame]:
    """Stream the scheduled frames (RGB, `size` or the schedule's size) in order, under a watchdog.

    Damaged packets are skipped (the seconds lost go to `report` and a message to `warnings`); a
    decode that stalls mid-file ends the stream early with a message in `warnings`. With `processes` (a
    `core.media.decodeproc.DecoderPool`), PyAV decodes in one of its worker processes instead of a thread here.
    """
    size = size or (schedule.width, schedule.height)
    targets = list(schedule.indices)
    fps = schedule.source_fps
    report = report if report is not None else DecodeReport()
    if info.truncated:
        report.readable_end = info.duration
    select: Any = pyav_select
    if processes is not None:
        from core.media.decodeproc import process_select

        select = partial(process_select, processes)
    if schedule.mode == "keyframes":
        producer = select(info.path, fps, info.start_time, info.rotation, targets, size, key_frames_only=True,
                          from_time=targets[0] / fps if targets else None, report=report)
    elif (processes is None and backend in ("auto", "opencv") and not info.variable_frame_rate
          and info.start_time == 0 and _opencv_ok()):
        producer = opencv_select(info.path, fps, targets, size, rotation=info.rotation, report=report)
    else:
        producer = select(info.path, fps, info.start_time, info.rotation, targets, size,
                          from_time=targets[0] / fps if targets else None, report=report)
    watched = Watched(producer, stall_s=stall_s, total_s=total_s, cancel=cancel, what=f"decoding {info.path}")
    target_times = [i / fps for i in targets]
    ti = 0
    for item in watched:
        assert isinstance(item, DecodedFrame)
        while ti + 1 < len(target_times) and abs(target_times[ti + 1] - item.time) < abs(target_times[ti] - item.time):
            ti += 1
        shift = item.time - target_times[ti] if target_times else 0.0
        ti = min(ti + 1, len(target_times) - 1)
        yield SampledFrame(item.index, item.time, item.image, shift)
    report.stopped_early = report.stopped_early or watched.stopped_early
    if warnings is not None:
        warnings.extend(watched.warnings)
        damage = report.warning()
        if damage:
            warnings.append(damage)


def _opencv_ok() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def sample_video(info: VideoInfo, plan: SamplingPlan, batch_size: int = 64, on_batch: Callable[[list[SampledFrame]], None]
                 | None = None, keep: bool = True, **kwargs: Any) -> SampledVideo:
    """Decode the frames `plan` takes from the probed video; returns a SampledVideo.

    Frames stream in batches of `batch_size` to `on_batch` (e.g. to write thumbnails); with
    `keep=False` they are not kept in memory (the result then lists no frames).
    """
    schedule = schedule_frames(info, plan)
    warnings: list[str] = list(schedule.warnings)
    frames: list[SampledFrame] = []
    batch: list[SampledFrame] = []
    count = 0
    largest = 0.0
    report = kwargs.pop("report", None) or DecodeReport()
    for frame in iter_samples(info, schedule, warnings=warnings, report=report, **kwargs):
        count += 1
        largest = max(largest, abs(frame.shift))
        if keep:
            frames.append(frame)
        if on_batch is not None:
            batch.append(frame)
            if len(batch) >= batch_size:
                on_batch(batch)
                batch = []
    if on_batch is not None and batch:
        on_batch(batch)
    complete = count >= schedule.frames
    if not complete:
        warnings.append(f"{count} of {schedule.frames} planned frames were decoded")
    complete = complete and not info.truncated and not report.damaged  # some seconds could not be read
    return SampledVideo(frames=frames, schedule=schedule, warnings=warnings, complete=complete, decoded=count,
                        largest_shift=largest)
