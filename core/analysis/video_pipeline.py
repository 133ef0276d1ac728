"""Analyse a video by stages (probe, scenes, motion, text) with progress and cancel, each stage's
result cached under the video's content hash + stage + its parameters, so reopening an analysed
video is instant. Partial text results are saved as they come (`video.text.partial`, in chunks of
`PARTIAL_CHUNK` readings, each written once), a cancelled text stage resumes from them, and they
are deleted once the stage's result is stored.

A damaged or truncated file gives a partial result (complete=False) with warnings naming the
seconds that could not be read; it is cached like any other (the same file gives the same result).
Only a decode the watchdog stopped (a stall, a time limit) is left uncached, to be tried again.

    result = analyze_video("talk.mp4", stages=("scenes", "motion"), cache=open_cache(load_settings()))
    for event in result.events: ...
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from core.events import Event, Progress, events_from_json, events_to_json, sort_events
from core.media.decode import DecodeReport
from core.media.errors import Cancelled, VideoError
from core.media.framepass import run_frame_pass
from core.media.motion import MotionParams, MotionResult
from core.media.probe import VideoInfo, probe_video, truncation_warning
from core.media.sampling import SamplingPlan
from core.media.scenes import SceneParams, SceneResult
from core.media.text import TextParams, TextReading, TextResult, TextTracker, run_text_pass

STAGES = ("scenes", "motion", "text")
PIPELINE_VERSION = 2  # 2: truncated and damaged files are read to their real end (results of 1 may be wrong)
PARTIAL_CHUNK = 50  # text readings per saved partial chunk


@dataclass
class AnalysisOptions:
    """Parameters of each stage (they are part of each stage's cache key)."""

    scenes: SceneParams = field(default_factory=SceneParams)
    motion: MotionParams = field(default_factory=MotionParams)
    text: TextParams = field(default_factory=TextParams)

    def stage_params(self, stage: str) -> dict[str, Any]:
        """The JSON-able parameters of `stage`."""
        return {"scenes": self.scenes, "motion": self.motion, "text": self.text}[stage].to_dict()


@dataclass
class VideoAnalysis:
    """Everything known about one video: probe, plan, per-stage results, all events, and where they came from."""

    input_hash: str
    path: str
    probe: dict[str, Any]
    plan: dict[str, Any]
    stages: dict[str, dict[str, Any]]
    events: list[Event]
    from_cache: dict[str, bool]
    complete: bool
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def info(self) -> VideoInfo:
        """The probe as a VideoInfo."""
        return VideoInfo.from_dict(self.probe)

    def scenes(self) -> SceneResult | None:
        """The scene stage's result, if run."""
        return SceneResult.from_dict(self.stages["scenes"]) if "scenes" in self.stages else None

    def motion(self) -> MotionResult | None:
        """The motion stage's result, if run."""
        return MotionResult.from_dict(self.stages["motion"]) if "motion" in self.stages else None

    def text(self) -> TextResult | None:
        """The text stage's result, if run."""
        return TextResult.from_dict(self.stages["text"]) if "text" in self.stages else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        d = asdict(self)
        d["events"] = events_to_json(self.events)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VideoAnalysis":
        """The VideoAnalysis stored by `to_dict`."""
        d = dict(data)
        d["events"] = events_from_json(d.get("events", []))
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})


def stage_key(input_hash: str, stage: str, params: dict[str, Any]) -> Any:
    """The cache key of one stage's result."""
    from core.cache import make_key

    return make_key(input_hash, f"video.{stage}", {"params": params, "pipeline": PIPELINE_VERSION})


def _events_of(stage: str, data: dict[str, Any]) -> list[Event]:
    if stage == "scenes":
        return SceneResult.from_dict(data).events()
    if stage == "motion":
        return MotionResult.from_dict(data).events()
    return TextResult.from_dict(data).events()


def analyze_video(path: str | Path, stages: Iterable[str] = STAGES, plan: SamplingPlan | None = None,
                  options: AnalysisOptions | None = None, cache: Any = None, progress: Progress | None = None,
                  cancel: threading.Event | None = None, input_hash: str | None = None,
                  refresh: bool = False) -> VideoAnalysis:
    """Run (or load from `cache`) the asked stages on the video at `path`; returns a VideoAnalysis.

    `plan` is the sampling plan stored with the result (the model's view of the video).
    `progress(fraction of the stage, message, stage)` is called as work advances; setting `cancel` stops the run
    with Cancelled (stages finished before are kept in the cache; text keeps its partial readings).
    `refresh=True` recomputes even when cached. VideoError for unusable files.
    """
    t0 = time.perf_counter()
    stages = tuple(dict.fromkeys(stages))
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise VideoError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}.")
    options = options or AnalysisOptions()
    plan = plan or SamplingPlan()
    p = Path(path)

    def report(stage: str, fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message, stage)

    if input_hash is None:
        if not p.is_file():
            raise VideoError(f"{p} does not exist or is not a file; check the path.")
        from core.cache import hash_file

        report("hash", 0.0, "hashing the file")
        input_hash = hash_file(p)
        report("hash", 1.0, "hashed")

    from_cache: dict[str, bool] = {}
    probe_data = None
    probe_key = stage_key(input_hash, "probe", {})
    if cache is not None and not refresh:
        probe_data = cache.get_json(probe_key)
    if probe_data is None:
        report("probe", 0.0, "probing")
        probe_data = probe_video(p).to_dict()
        if cache is not None:
            cache.put_json(probe_key, probe_data)
        from_cache["probe"] = False
    else:
        from_cache["probe"] = True
    info = VideoInfo.from_dict(probe_data)
    if info.path != str(p) and p.is_file():
        info.path = str(p)  # same content, maybe another place
        probe_data = info.to_dict()
    report("probe", 1.0, f"{info.duration:.1f} s, {info.width}x{info.height}, {info.fps:.2f} fps")

    results: dict[str, dict[str, Any]] = {}
    keys = {s: stage_key(input_hash, s, options.stage_params(s)) for s in stages}
    warnings: list[str] = list(info.warnings)
    complete = not info.truncated
    if cache is not None and not refresh:
        for s in stages:
            data = cache.get_json(keys[s])
            if data is not None:
                results[s] = data
                from_cache[s] = True
                warnings += data.get("warnings", [])
                complete = complete and bool(data.get("complete", True))
                report(s, 1.0, "from the cache")

    frame_stages = [s for s in ("scenes", "motion") if s in stages and s not in results]
    if frame_stages:
        def fp_progress(fraction: float, message: str = "", stage: str = "") -> None:
            for s in frame_stages:
                report(s, fraction, message)

        fp = run_frame_pass(info, scenes="scenes" in frame_stages, motion="motion" in frame_stages,
                            scene_params=options.scenes, motion_params=options.motion, progress=fp_progress,
                            cancel=cancel)
        warnings += fp.warnings
        complete = complete and fp.complete
        if fp.readable_end is not None:
            # no index told the probe; decoding found where the file really ends: later stages and
            # reopenings use that end
            info.declared_duration, info.duration, info.truncated = info.duration, fp.readable_end, True
            info.frame_count, info.frame_count_exact = max(1, int(round(fp.readable_end * info.fps))), False
            info.warnings = info.warnings + [truncation_warning(info.duration, info.declared_duration)]
            probe_data = info.to_dict()
            if cache is not None:
                cache.put_json(probe_key, probe_data)
        for s, res in (("scenes", fp.scenes), ("motion", fp.motion)):
            if s in frame_stages and res is not None:
                data = res.to_dict()
                data["complete"] = fp.complete
                data["warnings"] = list(fp.warnings)
                results[s] = data
                from_cache[s] = False
                if cache is not None and not fp.stopped_early:
                    cache.put_json(keys[s], data)

    if "text" in stages and "text" not in results:
        partial = PartialText(cache, input_hash, options.text) if cache is not None else None
        if partial is not None and refresh:
            partial.clear()
        resume = partial.load() if partial is not None else []
        if resume:
            report("text", 0.0, f"resuming after {len(resume)} saved readings (up to {resume[-1].time:.1f} s)")
        decoding = DecodeReport()
        try:
            text, tw = run_text_pass(info, options.text, progress=lambda f, m="", _s="": report("text", f, m), cancel=cancel,
                                     on_reading=partial.add if partial is not None else None, resume=resume,
                                     report=decoding)
        except Cancelled:
            if partial is not None:
                partial.flush()
            raise
        warnings += tw
        data = text.to_dict()
        text_complete = not decoding.stopped_early and not decoding.damaged and not info.truncated
        data["complete"] = text_complete
        data["warnings"] = list(tw)
        complete = complete and text_complete
        results["text"] = data
        from_cache["text"] = False
        if partial is not None and not decoding.stopped_early:
            cache.put_json(keys["text"], data)
            partial.clear()
        elif partial is not None:
            partial.flush()  # stopped early: the next run resumes from here

    events: list[Event] = []
    for s in stages:
        if s in results:
            events += _events_of(s, results[s])
    if info.truncated:
        events = [e for e in events if e.start < info.duration]
    return VideoAnalysis(input_hash=input_hash, path=str(p), probe=probe_data, plan=plan.to_dict(), stages=results,
                         events=sort_events(events), from_cache=from_cache, complete=complete,
                         warnings=list(dict.fromkeys(warnings)), seconds=time.perf_counter() - t0)


class PartialText:
    """The readings of an unfinished text stage, saved as they come in chunks of PARTIAL_CHUNK readings.

    Each full chunk is written once (the bytes written grow linearly with the readings, not with their
    square); `flush` writes the unfinished last chunk (on cancel); `load` joins the chunks back;
    `clear` deletes them once the stage's whole result is stored.
    """

    def __init__(self, cache: Any, input_hash: str, params: TextParams | None = None) -> None:
        self.cache = cache
        self.input_hash = input_hash
        self.params = (params or TextParams()).to_dict()
        self.chunk = 0  # index of the chunk being filled
        self.buffer: list[TextReading] = []

    def key(self, chunk: int) -> Any:
        """The cache key of chunk number `chunk`."""
        return stage_key(self.input_hash, "text.partial", {"text": self.params, "chunk": chunk})

    def load(self) -> list[TextReading]:
        """Every reading saved so far, in order; the chunk being filled continues after them."""
        readings: list[TextReading] = []
        chunk = 0
        while True:
            data = self.cache.get_json(self.key(chunk))
            if not data:
                break
            part = [TextReading(**r) for r in data["readings"]]
            if readings and part and part[0].index <= readings[-1].index:
                break  # left from another run: the readings saved before it stand
            readings += part
            if len(part) < PARTIAL_CHUNK:
                self.chunk, self.buffer = chunk, part
                return readings
            chunk += 1
        self.chunk, self.buffer = chunk, []
        return readings

    def add(self, reading: TextReading) -> None:
        """Keep one reading; a chunk that fills up is written."""
        self.buffer.append(reading)
        if len(self.buffer) >= PARTIAL_CHUNK:
            self._write()
            self.chunk, self.buffer = self.chunk + 1, []

    def flush(self) -> None:
        """Write the unfinished chunk (it is written again, whole, once it fills up)."""
        if self.buffer:
            self._write()

    def clear(self) -> int:
        """Delete every saved chunk; returns how many were deleted."""
        removed = 0
        chunk = 0
        while self.cache.contains(self.key(chunk)):
            self.cache.delete(self.key(chunk))
            removed += 1
            chunk += 1
        self.chunk, self.buffer = 0, []
        return removed

    def _write(self) -> None:
        self.cache.put_json(self.key(self.chunk), {"readings": [r.to_dict() for r in self.buffer], "complete": False})


def load_partial_text(cache: Any, input_hash: str, params: TextParams | None = None) -> list[TextReading]:
    """Text readings saved so far by an unfinished text stage (empty when none)."""
    return PartialText(cache, input_hash, params).load()


def partial_text_events(readings: list[TextReading], params: TextParams | None = None) -> list[Event]:
    """Text events of saved partial readings (no OCR is run again)."""
    tracker = TextTracker(params)
    for r in readings:
        tracker.replay(r)
    return tracker.finish().events()
