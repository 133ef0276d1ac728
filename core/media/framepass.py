"""One dense pass over a video's frames as small grey images, feeding the scene and motion detectors."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from core.events import Progress
from core.media.decode import DecodeReport, Watched, pyav_all_gray
from core.media.motion import MotionDetector, MotionParams, MotionResult
from core.media.probe import VideoInfo, truncation_warning
from core.media.scenes import SceneDetector, SceneParams, SceneResult



@dataclass
class FramePassResult:
    """Scene and motion results of one pass (None when not asked for), frames seen, and warnings.

    complete: every second of the declared video was read. stopped_early: the watchdog stopped it (a
    stall or time limit: worth running again). damaged: seconds lost to damaged data (listed in the
    warnings; the same file gives the same result). readable_end: where the file really ends, when
    decoding found it far short of the duration the probe read (a truncated file without an index).
    """

    scenes: SceneResult | None
    motion: MotionResult | None
    frames: int
    complete: bool
    warnings: list[str] = field(default_factory=list)
    stopped_early: bool = False
    damaged: list[tuple[float, float]] = field(default_factory=list)
    readable_end: float | None = None


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
    Damaged packets are skipped (their seconds named in a warning); a decode that stalls mid-file
    keeps what was seen, with a warning. Nothing past the readable end of a truncated file is used.
    """
    size = analysis_size(info, width)
    sd = SceneDetector(info.fps, scene_params) if scenes else None
    md = MotionDetector(info.fps, motion_params) if motion else None
    report = DecodeReport(readable_end=info.duration if info.truncated else None)
    producer = pyav_all_gray(info.path, info.fps, info.start_time, info.rotation, size, report=report)
    watched = Watched(producer, stall_s=stall_s, total_s=total_s, cancel=cancel, what=f"analysing {info.path}")
    count = 0
    last_report = -1.0
    duration = max(info.duration, 1e-6)
    last_time = 0.0
    for frame in watched:
        if info.truncated and frame.time >= info.duration:
            break  # bytes past the end of a cut file: not part of the video
        if sd is not None:
            sd.process(frame.index, frame.time, frame.image)
        if md is not None:
            md.process(frame.index, frame.time, frame.image)
        count += 1
        last_time = frame.time
        if progress is not None and frame.time - last_report >= 1.0:
            last_report = frame.time
            progress(min(1.0, frame.time / duration), f"frames analysed up to {frame.time:.1f} s")
    stopped = watched.stopped_early
    warnings = list(watched.warnings)
    seen_end = last_time + 1.0 / info.fps
    readable_end: float | None = None
    if not stopped and not info.truncated and count and _ends_early(seen_end, info.duration):
        readable_end = seen_end  # no index told the probe: decoding found the end
        report.cut_at(seen_end)  # the half-written packets at the cut are the truncation, not damage
        warnings.append(truncation_warning(seen_end, info.duration))
    damage = report.warning()
    if damage:
        warnings.append(damage)
    complete = not stopped and not report.damaged and readable_end is None and not info.truncated
    end = info.duration if not stopped and readable_end is None and info.duration > 0 else seen_end
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
    return FramePassResult(scene_result, motion_result, count, complete, warnings, stopped_early=stopped,
                           damaged=list(report.spans), readable_end=readable_end)


def _ends_early(seen_end: float, duration: float) -> bool:
    """True when the frames stop far short of the declared duration: by more than 2 s and 10% (more than
    the usual gap between a video track and a longer audio track, which the container's duration covers)."""
    return duration > 0 and seen_end + max(2.0, 0.1 * duration) < duration
