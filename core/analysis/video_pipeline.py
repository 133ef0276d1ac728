"""Analyse a video by stages (probe, scenes, motion, text) with progress and cancel, each stage's
result cached under the video's content hash + stage + its parameters, so reopening an analysed
video is instant. Partial text results are saved as they come (`video.text.partial`).

    result = analyze_video("talk.mp4", stages=("scenes", "motion"), cache=open_cache(load_settings()))
    for event in result.events: ...
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from core.analysis.events import Event, events_from_json, events_to_json, sort_events
from core.media.errors import Cancelled, VideoError
from core.media.framepass import run_frame_pass
from core.media.motion import MotionParams, MotionResult
from core.media.probe import VideoInfo, probe_video
from core.media.sampling import SamplingPlan
from core.media.scenes import SceneParams, SceneResult
from core.media.text import TextParams, TextReading, TextResult, TextTracker, run_text_pass

STAGES = ("scenes", "motion", "text")
PIPELINE_VERSION = 1
# progress(stage, fraction 0..1 of that stage, message)
StageProgress = Callable[[str, float, str], None]


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
                  options: AnalysisOptions | None = None, cache: Any = None, progress: StageProgress | None = None,
                  cancel: threading.Event | None = None, input_hash: str | None = None,
                  refresh: bool = False) -> VideoAnalysis:
    """Run (or load from `cache`) the asked stages on the video at `path`; returns a VideoAnalysis.

    `plan` is the sampling plan stored with the result (the model's view of the video).
    `progress(stage, fraction, message)` is called as work advances; setting `cancel` stops the run
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
            progress(stage, fraction, message)

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
    if cache is not None and not refresh:
        for s in stages:
            data = cache.get_json(keys[s])
            if data is not None:
                results[s] = data
                from_cache[s] = True
                report(s, 1.0, "from the cache")
    warnings: list[str] = list(info.warnings)
    complete = True

    frame_stages = [s for s in ("scenes", "motion") if s in stages and s not in results]
    if frame_stages:
        def fp_progress(fraction: float, message: str) -> None:
            for s in frame_stages:
                report(s, fraction, message)

        fp = run_frame_pass(info, scenes="scenes" in frame_stages, motion="motion" in frame_stages,
                            scene_params=options.scenes, motion_params=options.motion, progress=fp_progress,
                            cancel=cancel)
        warnings += fp.warnings
        complete = complete and fp.complete
        for s, res in (("scenes", fp.scenes), ("motion", fp.motion)):
            if s in frame_stages and res is not None:
                data = res.to_dict()
                data["complete"] = fp.complete
                results[s] = data
                from_cache[s] = False
                if cache is not None and fp.complete:
                    cache.put_json(keys[s], data)

    if "text" in stages and "text" not in results:
        partial_key = stage_key(input_hash, "text.partial", options.stage_params("text"))
        saved: list[TextReading] = []

        def on_reading(reading: TextReading) -> None:
            saved.append(reading)
            if cache is not None and len(saved) % 10 == 0:
                cache.put_json(partial_key, {"readings": [r.to_dict() for r in saved], "complete": False})

        try:
            text, tw = run_text_pass(info, options.text, progress=lambda f, m: report("text", f, m), cancel=cancel,
                                     on_reading=on_reading)
        except Cancelled:
            if cache is not None and saved:
                cache.put_json(partial_key, {"readings": [r.to_dict() for r in saved], "complete": False})
            raise
        warnings += tw
        data = text.to_dict()
        text_complete = not any("stopped" in w for w in tw)
        data["complete"] = text_complete
        complete = complete and text_complete
        results["text"] = data
        from_cache["text"] = False
        if cache is not None and text_complete:
            cache.put_json(keys["text"], data)

    events: list[Event] = []
    for s in stages:
        if s in results:
            events += _events_of(s, results[s])
    return VideoAnalysis(input_hash=input_hash, path=str(p), probe=probe_data, plan=plan.to_dict(), stages=results,
                         events=sort_events(events), from_cache=from_cache, complete=complete, warnings=warnings,
                         seconds=time.perf_counter() - t0)


def load_partial_text(cache: Any, input_hash: str, params: TextParams | None = None) -> list[TextReading]:
    """Text readings saved so far by an unfinished text stage (empty when none)."""
    data = cache.get_json(stage_key(input_hash, "text.partial", (params or TextParams()).to_dict()))
    return [TextReading(**r) for r in data["readings"]] if data else []


def partial_text_events(readings: list[TextReading], params: TextParams | None = None) -> list[Event]:
    """Text events of saved partial readings (no OCR is run again)."""
    tracker = TextTracker(params)
    for r in readings:
        tracker.readings.append(r)
        tracker._merge(r)  # noqa: SLF001 - replaying saved readings
    return tracker.finish().events()
