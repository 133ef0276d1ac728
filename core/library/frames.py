"""Small pictures of a video for the dashboard: a storyboard along the timeline and the frames around a moment."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from core.media import SamplingPlan, sample_video
from core.media.probe import VideoInfo


def _jpeg(rgb: np.ndarray, width: int, quality: int = 75) -> bytes:
    import cv2

    h, w = rgb.shape[:2]
    if w > width:
        rgb = cv2.resize(rgb, (width, max(1, int(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return bytes(buf) if ok else b""


def data_uri(jpeg: bytes) -> str:
    """A JPEG as a data: URI (for plotly layout images)."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _pixels(width: int, frames: int, info: VideoInfo) -> int:
    aspect = info.height / max(1, info.width)
    per = max(32 * 32 * 2, int(width * width * aspect * 1.2))
    return per * max(2, frames)


def storyboard(info: VideoInfo, count: int = 16, width: int = 112) -> dict[float, str]:
    """About `count` evenly spaced frames of the whole video as {time s: JPEG data URI}."""
    duration = max(info.duration, 1e-3)
    n = max(2, min(count, int(duration * info.fps) // 2 * 2 or 2))
    n -= n % 2
    plan = SamplingPlan(fps=n / duration, min_frames=2, max_frames=n, total_pixels=_pixels(width, n, info),
                        min_pixels=32 * 32, max_pixels=max(32 * 32, width * width))
    sampled = sample_video(info, plan)
    return {round(f.time, 3): data_uri(_jpeg(f.image, width)) for f in sampled.frames}


def frames_around(info: VideoInfo, t: float, span: float = 2.0, count: int = 6,
                  width: int = 240) -> list[tuple[float, bytes]]:
    """About `count` frames from t - span to t + span seconds as [(time s, JPEG bytes)]."""
    start = max(0.0, t - span)
    end = min(info.duration, t + span)
    if end - start < 2.0 / max(info.fps, 1e-3):
        start, end = max(0.0, end - 1.0), min(info.duration, start + 1.0)
    n = max(2, count - count % 2)
    plan = SamplingPlan(fps=n / max(end - start, 1e-3), min_frames=2, max_frames=n, start=start, end=end,
                        total_pixels=_pixels(width, n, info), min_pixels=32 * 32, max_pixels=max(32 * 32, width * width))
    sampled = sample_video(info, plan)
    return [(f.time, _jpeg(f.image, width)) for f in sampled.frames]


def to_json(board: dict[float, str]) -> dict[str, Any]:
    """A storyboard as JSON for the cache."""
    return {"times": list(board), "images": list(board.values())}


def from_json(data: dict[str, Any]) -> dict[float, str]:
    """The storyboard stored by `to_json`."""
    return dict(zip((float(t) for t in data.get("times", [])), data.get("images", [])))
