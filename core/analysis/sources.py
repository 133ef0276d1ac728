"""Frames for the model from a real video file: the whole video at the plan's budget, or a stretch of it.

Nothing here decodes when the engine keeps the video's visual features: `VideoQA` then asks with feature-backed
clips, and only the probe (duration) and the content key are taken from the file."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from core.analysis.qa import Clip
from core.cache import hash_file
from core.media.errors import VideoError
from core.media.probe import VideoInfo, probe_video
from core.media.sampling import SamplingPlan, iter_samples, sample_video, schedule_frames


READ_WORKERS = min(8, os.cpu_count() or 1)
"""Threads decoding stretches of a video at once for an ingest."""
MIN_STRETCH = 64
"""Frames a decoding thread takes at least (each stretch starts with a seek and decodes from a key frame)."""
PROCESS_MIN_WALK = 3000
"""Source frames an ingest's decoding walks through (about 100 s at 30 fps) from which its stretches are decoded in
worker processes (`core.media.decodeproc`): below it, starting them costs more than the GIL they spare the model."""


def _resize(frames: list[np.ndarray], width: int, height: int) -> list[np.ndarray]:
    import cv2

    return [f if f.shape[1] == width and f.shape[0] == height
            else cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames]


class MediaFrameSource:
    """A video file as a `FrameSource` for Q&A and captions: probes once, samples with the media pipeline."""

    def __init__(self, path: str | Path, plan: SamplingPlan | None = None, input_hash: str | None = None,
                 info: VideoInfo | None = None) -> None:
        self.path = Path(path)
        self.plan = plan or SamplingPlan()
        self.info = info or probe_video(self.path)
        if self.info.duration <= 0:
            raise VideoError(f"{self.path.name} has no playable video frames; check the file or re-export it.")
        self.input_hash = input_hash or hash_file(self.path)
        self._lock = threading.Lock()
        self.read_workers = READ_WORKERS
        self.decode_processes: bool | None = None
        """Decode an ingest's stretches in worker processes: None decides by the length walked (PROCESS_MIN_WALK)."""

    def duration(self) -> float:
        return float(self.info.duration)

    def plan_digest(self) -> str:
        text = json.dumps(self.plan.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def content_key(self) -> str:
        return f"{self.input_hash}:{self.plan_digest()}"

    def _clip(self, plan: SamplingPlan) -> Clip:
        sampled = sample_video(self.info, plan)
        if not sampled.frames:
            raise VideoError(f"no frame could be decoded from {self.path.name} between "
                             f"{plan.start or 0:.1f} and {plan.end or self.info.duration:.1f} s; the file may be damaged.")
        frames = [f.image for f in sampled.frames]
        indices = [f.index for f in sampled.frames]
        if len(frames) % 2 and len(frames) > 1:
            frames, indices = frames[:-1], indices[:-1]
        return Clip(frames, indices, sampled.schedule.source_fps, sampled.schedule.total_frames,
                    plan.total_pixels, plan.min_pixels)

    def overview(self) -> Clip:
        """The whole video (or the plan's window) at the plan's fps and pixel budget."""
        return self._clip(self.plan)

    def ingest_input(self) -> Any:
        """The overview as a `core.vlm.featurestore.IngestInput`: its frame numbers and size from the plan (nothing
        decoded yet), and a reader that decodes just the frames asked for, streamed (for a pipelined ingest)."""
        from core.vlm.ingest import IngestInput

        schedule = schedule_frames(self.info, self.plan)
        indices = list(schedule.indices)
        pool = self._decoder_pool(indices[-1] - indices[0] if indices else 0)

        def read(numbers: list[int], cancel: threading.Event | None) -> Any:
            if not numbers:
                return
            last: Any = None
            got = self._frames(schedule, sorted(set(numbers)), cancel, pool)
            for n in numbers:  # one frame per number asked for, in order (a repeated number repeats its frame)
                if last is None or last[2] != n:
                    frame = next(got, None)
                    if frame is None:
                        return
                    last = (frame.index, frame.image, n)
                yield last[0], last[1]

        return IngestInput(indices, float(schedule.source_fps), int(schedule.total_frames),
                           (int(schedule.height), int(schedule.width)), read, self.plan.total_pixels,
                           self.plan.min_pixels, read_apart=pool is not None)

    def _frames(self, schedule: Any, wanted: list[int], cancel: threading.Event | None,
                pool: Any = None) -> Iterator[Any]:
        """The frames `wanted` (increasing frame numbers) of `schedule`, in order, decoded in stretches by
        `read_workers` threads at once (each seeks to its stretch), each in a worker process of `pool` when given
        (a `core.media.decodeproc.DecoderPool`: PyAV's loop over every frame then holds another GIL)."""
        fps = schedule.source_fps
        workers = max(1, min(self.read_workers, -(-len(wanted) // MIN_STRETCH)))
        size = max(MIN_STRETCH, -(-len(wanted) // (2 * workers)))
        stretches = [wanted[k:k + size] for k in range(0, len(wanted), size)]

        def decode(targets: list[int]) -> list[Any]:
            sub = replace(schedule, indices=targets, times=[i / fps for i in targets])
            return list(iter_samples(self.info, sub, cancel=cancel, backend="pyav", processes=pool))

        threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlscope-read")
        pending: deque[Future[list[Any]]] = deque()
        try:
            for stretch in stretches:
                pending.append(threads.submit(decode, stretch))
                if len(pending) > workers:  # at most `workers` stretches ahead of the one handed out
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            threads.shutdown(wait=False, cancel_futures=True)

    def _decoder_pool(self, walk: int) -> Any:
        """The worker processes an ingest decodes in (`decode_processes`), or None: threads here."""
        wanted = self.decode_processes if self.decode_processes is not None else walk >= PROCESS_MIN_WALK
        if not wanted:
            return None
        from core.media.decodeproc import shared_pool

        pool = shared_pool()
        if not pool.usable():
            return None
        pool.warm(self.read_workers)
        return pool

    def window(self, start: float, end: float, fps: float, like: Clip | None = None) -> Clip:
        """[start, end] at `fps`, at most the plan's max frames; frames resized like `like` when given."""
        start = max(0.0, start)
        end = min(self.duration(), end)
        if end - start < 0.5:
            start, end = max(0.0, end - 1.0), min(self.duration(), start + 1.0)
        plan = replace(self.plan, fps=fps, start=start, end=end, min_frames=2)
        clip = self._clip(plan)
        size = like.size if like is not None else None  # a feature-backed clip knows its frames' size too
        if like is not None and size is not None:
            h, w = size
            clip.frames = _resize([np.asarray(f) for f in clip.frames], w, h)
            clip.max_pixels_total, clip.min_pixels_total = like.max_pixels_total, like.min_pixels_total
        return clip


def describe(source: Any) -> dict[str, Any]:
    """A JSON-able description of a frame source (for results and the CLI)."""
    info = getattr(source, "info", None)
    return {"duration": source.duration(), "content_key": source.content_key(),
            "file": str(getattr(source, "path", "")), "fps": getattr(info, "fps", None)}
