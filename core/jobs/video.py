"""The video page's background work: analyse a video by stages, then its storyboard, saved as it goes."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

from core.analysis.video_pipeline import AnalysisOptions, VideoAnalysis, analyze_video, stage_key
from core.cache import ResultCache, make_key
from core.jobs.registry import JobContext
from core.media.probe import VideoInfo
from core.media.sampling import SamplingPlan

STORYBOARD_STAGE = "video.storyboard"
# share of the whole job each stage takes (the on-screen text pass OCRs frames: by far the slowest)
WEIGHTS = {"hash": 0.0, "probe": 0.02, "scenes": 0.25, "motion": 0.25, "text": 0.6}


def analysis_key(input_hash: str, stages: tuple[str, ...], plan: SamplingPlan) -> str:
    """The job key of one analysis: same file, stages and plan = same job (shared by every session)."""
    digest = hashlib.sha256(json.dumps([sorted(stages), plan.to_dict()], sort_keys=True).encode()).hexdigest()[:12]
    return f"video:{input_hash}:{digest}"


def is_cached(cache: ResultCache, input_hash: str, stages: tuple[str, ...],
              options: AnalysisOptions | None = None) -> bool:
    """True when every asked stage is already in the cache (opening it is then instant)."""
    options = options or AnalysisOptions()
    keys = [stage_key(input_hash, "probe", {})] + [stage_key(input_hash, s, options.stage_params(s)) for s in stages]
    return all(cache.contains(k) for k in keys)


def overall_progress(stages: tuple[str, ...]) -> Callable[[str, float], float]:
    """A function (stage, stage fraction) -> fraction of the whole analysis."""
    active = [s for s in ("probe", *stages)]
    total = sum(WEIGHTS.get(s, 0.1) for s in active) or 1.0
    done: dict[str, float] = {}

    def overall(stage: str, fraction: float) -> float:
        if stage in active:
            done[stage] = max(done.get(stage, 0.0), fraction)
        return sum(WEIGHTS.get(s, 0.1) * done.get(s, 0.0) for s in active) / total

    return overall


def storyboard_key(input_hash: str) -> Any:
    return make_key(input_hash, STORYBOARD_STAGE, {"count": 16, "width": 112})


def load_storyboard(cache: ResultCache, input_hash: str) -> dict[float, str]:
    """The storyboard saved for a video ({time: data URI}), empty when none."""
    from core.library.frames import from_json

    data = cache.get_json(storyboard_key(input_hash))
    return from_json(data) if data else {}


def analyze_work(path: str, input_hash: str, stages: tuple[str, ...], plan: SamplingPlan, cache: ResultCache,
                 options: AnalysisOptions | None = None) -> Callable[[JobContext], VideoAnalysis]:
    """The job function: `analyze_video` with its progress mapped to the job, then the storyboard."""
    overall = overall_progress(stages)

    def work(ctx: JobContext) -> VideoAnalysis:
        def progress(stage: str, fraction: float, message: str) -> None:
            ctx.progress(overall(stage, fraction) * 0.97, f"{stage}: {message}", stage)

        result = analyze_video(path, stages=stages, plan=plan, options=options, cache=cache, progress=progress,
                               cancel=ctx.cancel, input_hash=input_hash)
        if not ctx.cancelled and not cache.contains(storyboard_key(input_hash)):
            from core.library.frames import storyboard, to_json

            ctx.progress(0.98, "storyboard: taking pictures along the video", "storyboard")
            try:
                board = storyboard(VideoInfo.from_dict(result.probe))
                cache.put_json(storyboard_key(input_hash), to_json(board))
            except Exception as exc:  # noqa: BLE001 - pictures are a nicety; the analysis is done
                result.warnings.append(f"no storyboard: {exc}")
        return result

    return work
