"""Media: probe, decode and sample videos on the CPU (no model), plus scene cuts, motion and on-screen text."""

from core.media.errors import Cancelled, VideoError
from core.media.probe import VideoInfo, probe_video
from core.media.sampling import (
    FrameSchedule,
    SampledFrame,
    SampledVideo,
    SamplingPlan,
    iter_samples,
    sample_video,
    schedule_frames,
    smart_resize_video,
)

__all__ = [
    "Cancelled",
    "FrameSchedule",
    "SampledFrame",
    "SampledVideo",
    "SamplingPlan",
    "VideoError",
    "VideoInfo",
    "iter_samples",
    "probe_video",
    "sample_video",
    "schedule_frames",
    "smart_resize_video",
]
