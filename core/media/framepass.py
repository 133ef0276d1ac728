"""One dense pass over a video's frames as small grey images, feeding the scene and motion detectors."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from core.media.decode import Watched, pyav_all_gray
from core.media.motion import MotionDetector, MotionParams, MotionResult
from core.media.probe import VideoInfo
from core.media.scenes import SceneDetector, SceneParams, SceneResult

Progress = Callable[[float, str], None]


@dataclass
class FramePassResult:
    """Scene and motion results of one pass (None when not asked for), frames seen, and warnings."""

    scenes: SceneResult | None
    motion: MotionResult | None
    frames: int
    complete: bool
    warnings: list[str] = field(default_factory=list)


def analysis_size(info: VideoInfo, width: int = 160) -> tuple[int, int]:
    """(width, height) of the small grey frames: `width` wide, the video's aspect, even sides."""
    w = min(width, info.width)
    h = max(2, int(round(w * info.height / info.width / 2)) * 2)
    return max(2, w - w % 2), h


def run_frame_pass(info: VideoInfo, scenes: bool = True, motion: bool = True,
                   scene_params: SceneParams | None = None, motion_params: MotionParams | None = None,
                   progress: Progress | None = None, cancel: threading.Event | None = None,
                   stall_s: float = 60.0, total_s: float | None = None, width: int = 160) -> FramePassResult:
    """Decode every frame once (small grey) and return the scene cuts and/or motion of the video.

    `progress(fraction, message)` is called about once a second of video; `cancel` stops it (Cancelled).
    A decode that fails mid-file keeps what was seen, with a warning.
    """
    size = analysis_size(info, width)
    sd = SceneDetector(info.fps, scene_params) if scenes else None
    md = MotionDetector(info.fps, motion_params) if motion else None
    producer = pyav_all_gray(info.path, info.fps, info.start_time, info.rotation, size)
    watched = Watched(producer, stall_s=stall_s, total_s=total_s, cancel=cancel, what=f"analysing {info.path}")
    count = 0
    last_report = -1.0
    duration = max(info.duration, 1e-6)
    last_time = 0.0
    for frame in watched:
        if sd is not None:
            sd.process(frame.index, frame.time, frame.image)
        if md is not None:
            md.process(frame.index, frame.time, frame.image)
        count += 1
        last_time = frame.time
        if progress is not None and frame.time - last_report >= 1.0:
            last_report = frame.time
            progress(min(1.0, frame.time / duration), f"frames analysed up to {frame.time:.1f} s")
    complete = not watched.stopped_early
    end = info.duration if complete and info.duration > 0 else last_time + 1.0 / info.fps
    scene_result = sd.finish(end) if sd is not None else None
    cut_times: list[float] = []
    if scene_result is not None:
        cut_times = list(scene_result.cuts)
    motion_result = md.finish(cut_times, end) if md is not None else None
    if motion_result is not None and sd is not None:
        # fades are brightness changes, not motion: drop activity inside them
        fades = [(f.start, f.end) for f in scene_result.fades] if scene_result else []
        motion_result.activity = [a for a in motion_result.activity
                                  if not any(fs - 0.2 <= a["start"] and a["end"] <= fe + 0.2 for fs, fe in fades)]
    if progress is not None:
        progress(1.0, f"{count} frames analysed")
    return FramePassResult(scene_result, motion_result, count, complete, list(watched.warnings))
