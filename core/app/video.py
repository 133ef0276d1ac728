"""Video workflows, the same for the dashboard, the CLI and the API: recognise, probe, plan, analyse
(in the background or at once), ask, caption and summarise. Every result goes through the runtime's
result cache, so work done by one front end is never done again by another.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from core.analysis.video_pipeline import STAGES, AnalysisOptions, VideoAnalysis, analyze_video, stage_key
from core.cache import make_key
from core.errors import UserError
from core.events import CancelToken, Event, Progress
from core.files.store import VIDEO_SUFFIXES
from core.jobs.registry import Job, JobContext
from core.media.budget import (
    BudgetEstimate,
    DeviceMemory,
    device_memory,
    fit_plan,
    ladder_plan,
    model_bytes,
    plan_budget,
    size_from_config,
    size_from_model,
)
from core.media.probe import VideoInfo, probe_video
from core.media.sampling import SamplingPlan
from core.vlm.features import CHUNK_GROUPS as FEATURE_CHUNK_GROUPS

if TYPE_CHECKING:  # pragma: no cover - typing only
    from core.analysis.qa import AnswerResult, VideoQA
    from core.analysis.summary import CaptionOptions
    from core.app.context import AppContext
    from core.app.conversations import Conversation, ConversationStore
    from core.vlm.types import Message
    from core.vlm.types import GenerationParams

STORYBOARD_STAGE = "video.storyboard"
ANSWERS_STAGE = "video.answers"
# share of the whole analysis each stage takes (the on-screen text pass OCRs frames: by far the slowest)
WEIGHTS = {"hash": 0.0, "probe": 0.02, "scenes": 0.25, "motion": 0.25, "text": 0.6}
# share of the captions + summary job each part takes
SUMMARY_WEIGHTS = {"captions": 0.8, "chapters": 0.2}
DEFAULT_FPS = 2.0
DEFAULT_MAX_FRAMES = 768
INGEST_PART_FRAMES = 2 * FEATURE_CHUNK_GROUPS  # frames a visual-memory ingest encodes at a time (a stored part)


def is_video(path: str | Path, head: bytes | None = None) -> bool:
    """True for a video file: by its suffix, or by an MP4/MOV `ftyp` box when the name says nothing.

    The one rule of "is this a video" for every front end (HEIC/AVIF images also carry `ftyp`).
    """
    p = Path(path)
    if p.suffix.lower() in VIDEO_SUFFIXES:
        return True
    if head is None:
        try:
            with open(p, "rb") as f:
                head = f.read(16)
        except OSError:
            return False
    return len(head) >= 12 and head[4:8] == b"ftyp" and not head[8:12].startswith((b"heic", b"heix", b"avif", b"mif1"))


def analysis_key(input_hash: str, stages: tuple[str, ...], plan: SamplingPlan) -> str:
    """The job key of one analysis: same file, stages and plan = same job (shared by every session)."""
    return f"video:{input_hash}:{_digest([sorted(stages), plan.to_dict()])}"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def overall_progress(stages: tuple[str, ...]) -> Callable[[str, float], float]:
    """A function (stage, fraction of that stage) -> fraction of the whole analysis."""
    active = ["probe", *stages]
    total = sum(WEIGHTS.get(s, 0.1) for s in active) or 1.0
    done: dict[str, float] = {}

    def overall(stage: str, fraction: float) -> float:
        if stage in active:
            done[stage] = max(done.get(stage, 0.0), fraction)
        return sum(WEIGHTS.get(s, 0.1) * done.get(s, 0.0) for s in active) / total

    return overall


def model_size(model: str) -> tuple[str, bool]:
    """(the planner's model size, True when read from the model's name; else '4b', False): "2b" | "4b" | "8b" for
    Qwen3-VL, a known shape such as "qwen3.5-4b" or "qwen3-vl-30b-a3b" (core.vlm.shapes) for the others."""
    from core.media.budget import planner_size

    key = planner_size(model)
    if key and key.removeprefix("qwen3-vl-") in ("2b", "4b", "8b"):
        key = key.removeprefix("qwen3-vl-")  # the original three sizes keep their short names
    return (key, True) if key else ("4b", False)


def model_precision(settings: Any, gpu: bool) -> str:
    """The precision the planner should assume for these settings."""
    if settings.quantization in ("8bit", "4bit") and gpu:
        return settings.quantization
    if settings.dtype != "auto":
        return settings.dtype
    if "fp8" in settings.model.lower() and gpu:
        return "fp8"
    return "bf16" if gpu else "fp32"


@dataclass
class PlanChoice:
    """A sampling plan with what it will cost and what the estimate assumed.

    reasons: plain sentences saying why the default plan was chosen and what a bigger one would need.
    memory: the memory plans are fitted to (None for a remote engine); usable_bytes: the share of it
    a plan may fill. size_from: where the model size came from ("config", "name" or "assumed").
    automatic: True for the default plan (the best that fits), False for the user's own choices.
    remote: the model runs on a remote server (its memory is not checked).
    """

    plan: SamplingPlan
    estimate: BudgetEstimate
    model_size: str
    size_from_name: bool
    gpu_name: str | None
    reasons: list[str] = field(default_factory=list)
    memory: DeviceMemory | None = None
    usable_bytes: int | None = None
    size_from: str = "name"
    automatic: bool = False
    remote: bool = False

    @property
    def where(self) -> str:
        """Where the peak memory is: 'GPU', 'RAM', or 'server' (a remote engine)."""
        if self.remote:
            return "server"
        if self.memory is not None:
            return self.memory.where
        return "GPU" if self.gpu_name else "RAM"

    @property
    def frame_pixels(self) -> int | None:
        """The plan's own per-frame pixel cap, None when it keeps the standard budget over all frames."""
        std = SamplingPlan()
        same = (self.plan.max_pixels, self.plan.total_pixels) == (std.max_pixels, std.total_pixels)
        return None if same else self.plan.max_pixels


@dataclass
class SummaryResult:
    """What the captions + summary job returns."""

    captions: Any
    summary: Any
    events: list[Event] = field(default_factory=list)


class VideoService:
    """Video workflows over one runtime (its settings, cache, engine and jobs)."""

    def __init__(self, runtime: "AppContext") -> None:
        self.runtime = runtime

    # ------------------------------------------------------------------ probe and plan
    def probe(self, path: str | Path, input_hash: str | None = None) -> VideoInfo:
        """The probe of a file, kept in the result cache (reopening is instant). VideoError when unusable."""
        if input_hash is None:
            return probe_video(path)
        cache = self.runtime.cache
        key = stage_key(input_hash, "probe", {})
        data = cache.get_json(key)
        if isinstance(data, dict) and data.get("path") == str(path):
            try:
                return VideoInfo.from_dict(data)
            except (TypeError, ValueError, KeyError):
                pass  # an older or damaged entry: probe again
        info = probe_video(path)
        cache.put_json(key, info.to_dict())
        return info

    def plan(self, info: VideoInfo, fps: float | None = None, max_frames: int | None = None,
             window: tuple[float, float] | None = None, max_new_tokens: int | None = None,
             max_pixels: int | None = None) -> PlanChoice:
        """The sampling plan for these choices and its cost on this machine (VideoError for a bad choice).

        With no fps, frames or pixels chosen: the default plan, the best that fits (`default_plan`).
        `max_pixels`: a per-frame pixel cap (None: the standard budget over all frames).
        """
        if fps is None and max_frames is None and max_pixels is None:
            return self.default_plan(info, window, max_new_tokens)
        start, end = window if window is not None else (0.0, info.duration)
        plan = SamplingPlan(fps=float(fps or DEFAULT_FPS), max_frames=int(max_frames or DEFAULT_MAX_FRAMES),
                            start=start or None, end=None if end >= info.duration else end)
        if max_pixels is not None:
            plan = ladder_plan(plan, plan.max_frames, max_pixels)
        return self._estimate(info, plan, max_new_tokens)

    def _estimate(self, info: VideoInfo, plan: SamplingPlan, max_new_tokens: int | None) -> PlanChoice:
        """`plan` with its cost on this machine."""
        size, size_from, memory, kw = self._planner(max_new_tokens)
        usable = kw.pop("usable")
        estimate = plan_budget(info, plan, model_size=size, gpu_memory_bytes=usable, look_for_gpu=False, **kw)
        return PlanChoice(plan, estimate, size, size_from != "assumed", memory.name if memory else None,
                          memory=memory, usable_bytes=usable, size_from=size_from, remote=memory is None)

    def default_plan(self, info: VideoInfo, window: tuple[float, float] | None = None,
                     max_new_tokens: int | None = None, input_hash: str | None = None) -> PlanChoice:
        """The best plan that fits this machine (`core.media.budget.fit_plan`), with the reasons to show.

        Fitted to the free GPU memory (plus what the loaded model holds), or the RAM available on the
        CPU; a remote engine's plan is the standard one, unchecked. With `input_hash`, the plan chosen the first
        time for this video, model, device and window is kept (in the result cache) and chosen again while it
        still fits: free memory moves between processes, and a plan that moved with it would miss the video's
        stored visual features and analyses.
        """
        choice = self._fit(info, window, max_new_tokens)
        if input_hash is None or choice.memory is None:
            return choice
        kept = self.runtime.cache.get_json(self._kept_plan_key(input_hash, info, window))
        if isinstance(kept, dict):
            try:
                plan = SamplingPlan.from_dict(kept)
            except Exception:  # noqa: BLE001 - an unreadable record: the best plan for now
                plan = None
            if plan is not None and plan != choice.plan:
                again = self._estimate(info, plan, max_new_tokens)
                if again.estimate.peak_gpu_bytes <= (choice.usable_bytes or 0):
                    again.reasons = [f"The plan this video was asked about before, {again.estimate.describe()}, still "
                                     "fits: kept, so its stored visual features and analyses are used."]
                    again.automatic = True
                    return again
        return choice

    def _kept_plan_key(self, input_hash: str, info: VideoInfo, window: tuple[float, float] | None) -> Any:
        whole = window is None or (window[0] <= 0 and window[1] >= info.duration - 0.05)
        return make_key(input_hash, "video.default-plan", {"window": None if whole else [window[0], window[1]],
                                                          "model": self.runtime.settings.model})

    def keep_plan(self, input_hash: str, info: VideoInfo, plan: SamplingPlan) -> None:
        """Remember `plan` as the video's plan: work was stored for it (its visual features), so `default_plan`
        chooses it again while it fits, in any process, however much memory is free then."""
        window = None if plan.start is None and plan.end is None else (plan.start or 0.0, plan.end or info.duration)
        self.runtime.cache.put_json(self._kept_plan_key(input_hash, info, window), plan.to_dict())

    def _fit(self, info: VideoInfo, window: tuple[float, float] | None,
             max_new_tokens: int | None) -> PlanChoice:
        size, size_from, memory, kw = self._planner(max_new_tokens)
        usable = kw.pop("usable")
        fraction = self.runtime.settings.plan_memory_fraction
        plan, estimate, reasons = fit_plan(
            info, memory.free_bytes if memory else None, size, fps=DEFAULT_FPS, max_frames=DEFAULT_MAX_FRAMES,
            window=window, memory_words=memory.words() if memory else None, fraction=fraction, **kw)
        if memory is None:
            reasons = [f"The model runs on a remote server (setting `engine`): its memory is not checked here; "
                       f"the standard plan, {estimate.describe()}, is used."]
        elif memory.where == "RAM":
            why = ("The model is set to run on the CPU (setting `device`)" if self.runtime.settings.device == "cpu"
                   else "No GPU found: the model runs on the CPU")
            reasons.insert(0, f"{why}, so plans are fitted to the RAM available ({memory.free_bytes / 1024**3:.1f} "
                              "GiB).")
        return PlanChoice(plan, estimate, size, size_from != "assumed", memory.name if memory else None,
                          reasons=reasons, memory=memory, usable_bytes=usable, size_from=size_from, automatic=True,
                          remote=memory is None)

    def _planner(self, max_new_tokens: int | None) -> tuple[str, str, DeviceMemory | None, dict[str, Any]]:
        """(model size, where it came from, the memory to fit, the estimate's other arguments) for this machine.

        The size comes from the loaded model's config when there is one, else from the model's name.
        """
        settings = self.runtime.settings
        size, named = model_size(settings.model)
        size_from = "name" if named else "assumed"
        if not named and (known := size_from_model(settings.model)):  # the configured model's own config.json
            size, size_from = known, "config"
        memory: DeviceMemory | None = None
        if settings.engine != "remote":
            engine = self.runtime.engine if self.runtime.engine_made else None
            held: int | None = None
            device = settings.device
            if engine is not None and getattr(engine, "loaded", False):
                model = engine.model  # type: ignore[attr-defined]
                known = size_from_config(getattr(model, "config", None))
                if known:
                    size, size_from = known, "config"
                held = model_bytes(model)
                device = engine.info().device or device
            memory = device_memory(device, held)
        gpu = memory.where == "GPU" if memory is not None else True  # a remote server: a GPU's precision
        usable = int(memory.free_bytes * settings.plan_memory_fraction) if memory else None
        # the fast decoder (on a GPU) decodes in the kept prefix itself; transformers' path decodes in a copy of it
        fast = memory is not None and memory.where == "GPU" and settings.fast_decode != "off"
        loaded = self.runtime.engine if settings.engine != "remote" and self.runtime.engine_made else None
        if loaded is not None and getattr(loaded, "loaded", False):  # Qwen3.5 decodes on the plain path
            fast = fast and bool(getattr(loaded, "fast_decode_enabled", True))
        local = settings.engine != "remote"
        return size, size_from, memory, dict(
            precision=model_precision(settings, gpu), max_new_tokens=max_new_tokens or settings.max_new_tokens,
            where=memory.where if memory else "GPU", prefill_chunk_tokens=settings.prefill_chunk_tokens,
            kv_copies=2 if settings.prefix_cache_gb > 0 and not fast else 1, usable=usable,
            encode_frames=INGEST_PART_FRAMES if local else 0)

    # ------------------------------------------------------------------ analysis
    def is_cached(self, input_hash: str, stages: tuple[str, ...], options: AnalysisOptions | None = None) -> bool:
        """True when every asked stage is already in the cache (opening it is then instant)."""
        options = options or AnalysisOptions()
        keys = [stage_key(input_hash, "probe", {})] + [stage_key(input_hash, s, options.stage_params(s)) for s in stages]
        return all(self.runtime.cache.contains(k) for k in keys)

    def analyse(self, path: str | Path, stages: tuple[str, ...] = STAGES, plan: SamplingPlan | None = None,
                input_hash: str | None = None, options: AnalysisOptions | None = None,
                progress: Progress | None = None, cancel: CancelToken | None = None,
                refresh: bool = False) -> VideoAnalysis:
        """Analyse now (cached stages are read, not recomputed); VideoError for unusable files."""
        from core.files.store import using

        with using(path):  # the upload store never evicts a file being read
            return analyze_video(path, stages=stages, plan=plan or SamplingPlan(), options=options,
                                 cache=self.runtime.cache, progress=progress, cancel=cancel, input_hash=input_hash,
                                 refresh=refresh)

    def cached_analysis(self, path: str | Path, input_hash: str, stages: tuple[str, ...],
                        plan: SamplingPlan) -> VideoAnalysis | None:
        """The analysis when every stage is cached (no work), else None."""
        if not stages or not self.is_cached(input_hash, stages):
            return None
        return self.analyse(path, stages, plan, input_hash)

    def analysis_work(self, path: str | Path, input_hash: str, stages: tuple[str, ...], plan: SamplingPlan,
                      options: AnalysisOptions | None = None) -> Callable[[JobContext], VideoAnalysis]:
        """The background job: the analysis with its progress mapped to the job, then the storyboard."""
        overall = overall_progress(stages)

        def work(ctx: JobContext) -> VideoAnalysis:
            def progress(fraction: float, message: str = "", stage: str = "") -> None:
                ctx.progress(overall(stage, fraction) * 0.97, f"{stage_label(stage)}: {message}", stage)

            result = self.analyse(path, stages, plan, input_hash, options, progress=progress, cancel=ctx.cancel)
            if not ctx.cancelled and not self.runtime.cache.contains(storyboard_key(input_hash)):
                from core.library.frames import storyboard, to_json

                ctx.progress(0.98, "pictures along the video: taking them", "storyboard")
                try:
                    board = storyboard(VideoInfo.from_dict(result.probe))
                    self.runtime.cache.put_json(storyboard_key(input_hash), to_json(board))
                except Exception as exc:  # noqa: BLE001 - pictures are a nicety; the analysis is done
                    result.warnings.append(f"no pictures along the timeline: {exc}")
            return result

        return work

    def start_analysis(self, path: str | Path, input_hash: str, stages: tuple[str, ...], plan: SamplingPlan,
                       title: str) -> Job:
        """Run the analysis as a background job (one per file, stages and plan, shared by every session)."""
        return self.runtime.jobs.submit(analysis_key(input_hash, stages, plan), title,
                                        self.analysis_work(path, input_hash, stages, plan))

    def analysis_job(self, input_hash: str, stages: tuple[str, ...], plan: SamplingPlan) -> Job | None:
        """The background analysis job of these choices, if one was started in this process."""
        return self.runtime.jobs.get(analysis_key(input_hash, stages, plan))

    def storyboard(self, input_hash: str) -> dict[float, str]:
        """The pictures saved along a video ({time: data URI}), empty when none."""
        from core.library.frames import from_json

        data = self.runtime.cache.get_json(storyboard_key(input_hash))
        return from_json(data) if data else {}

    # ------------------------------------------------------------------ questions
    def questions(self, path: str | Path, plan: SamplingPlan | None = None, input_hash: str | None = None,
                  info: VideoInfo | None = None) -> "VideoQA":
        """A question session on the video with the runtime's engine (its overview is encoded once)."""
        from core.analysis.qa import VideoQA
        from core.analysis.sources import MediaFrameSource

        if plan is None:  # the best plan that fits this machine (the one chosen before for this video, if it fits)
            info = info or self.probe(path, input_hash)
            plan = self.default_plan(info, input_hash=input_hash).plan
        source = MediaFrameSource(path, plan=plan, input_hash=input_hash, info=info)
        qa = VideoQA(self.runtime.engine, source, max_frames=plan.max_frames)
        qa.speech = self.transcript(source.input_hash)  # None without one: the prompt is the question alone
        if qa.speech is not None:
            qa.count_tokens = self.token_counter()
        return qa

    def transcript(self, input_hash: str | None) -> Any:
        """The video's stored transcript (core.speech.types.Transcript), or None when none was made (no work is
        done; a problem reading it is the same as none: questions and summaries then go without speech)."""
        if not input_hash:
            return None
        try:
            from core.app.speech import cached_transcript

            return cached_transcript(self.runtime, input_hash, partial=False)
        except Exception:  # noqa: BLE001 - speech is an addition: its absence never stops a question
            return None

    def ingest(self, path: str | Path, plan: SamplingPlan | None = None, input_hash: str | None = None,
               info: VideoInfo | None = None, progress: Any = None, cancel: Any = None) -> Any:
        """Put the video's overview in the engine's visual memory ahead of any question (decoded, encoded and stored
        part by part; resumes where an earlier ingest stopped); returns the `IngestReport`. UserError where the
        engine keeps no visual memory (a remote engine)."""
        qa = self.questions(path, plan, input_hash, info)
        memory = getattr(self.runtime.engine, "feature_memory", None)
        if memory is None:
            raise UserError("This engine keeps no visual memory (a remote server, or the model not loaded here): "
                            "questions are answered from the frames each time.", "Use the local model to ingest.")
        key = qa.source.content_key()
        # the kept prefix of a question about the whole video is prefilled as the parts come: the first question
        # then finds it (in GPU memory, or on disk after a restart)
        done = memory.ingest(key, qa.source.ingest_input(), progress, cancel, keep=False,
                             prefix_of=lambda meta: qa.prefix_messages(meta, key))
        self.keep_plan(qa.source.input_hash, qa.source.info, qa.source.plan)
        return done

    def start_ingest(self, path: str | Path, input_hash: str, plan: SamplingPlan, title: str) -> Job:
        """`ingest` as a background job (one per file and plan, shared by every session), with progress and cancel."""
        def work(ctx: JobContext) -> Any:
            def progress(fraction: float, message: str = "", stage: str = "") -> None:
                ctx.progress(fraction, f"visual memory: {message}", "ingest")

            return self.ingest(path, plan, input_hash, progress=progress, cancel=ctx.cancel)

        return self.runtime.jobs.submit(f"ingest:{input_hash}:{_digest(plan.to_dict())}", title, work)

    def ask(self, path: str | Path, question: str, params: "GenerationParams | None" = None,
            plan: SamplingPlan | None = None, input_hash: str | None = None, info: VideoInfo | None = None,
            refine: bool = True, conversation: bool = False) -> "AnswerResult":
        """Answer one question (with times) and keep the answer in the cache; with `conversation` (and the video's
        `input_hash`), as the next turn of the video's current conversation (`stream_turn`)."""
        qa = self.questions(path, plan, input_hash, info)
        if conversation and input_hash:
            for _ in self.stream_turn(qa, input_hash, question, params, refine=refine):
                pass
            assert qa.last_result is not None
            return qa.last_result
        for _ in self.stream_ask(qa, question, params, refine=refine):
            pass
        result = qa.last_result
        assert result is not None
        if input_hash:
            self.save_answer(input_hash, qa.source.plan, question, result)
        return result

    def stream_ask(self, qa: "VideoQA", question: str, params: "GenerationParams | None" = None,
                   refine: bool = True, history: "list[Message] | None" = None) -> Iterator[str]:
        """The answer's text as it comes; afterwards `qa.last_result` holds the whole answer.

        `history`: earlier turns (user, assistant, ...) given to the model before the question (see `stream_turn`).

        Out of memory before the first word: the kept prefixes leave the GPU and the question is tried again;
        still out of memory, the plan is lowered once (`lower_plan`) and the answer says so. The engine stays usable.
        """
        from core.vlm.base import OutOfMemory

        notes: list[str] = []
        for attempt in range(3):
            started = False
            try:
                for chunk in qa.stream_answer(question, params, history=history, refine=refine):
                    started = True
                    yield chunk
                break
            except OutOfMemory:
                if started or attempt == 2:
                    raise
                if attempt == 0 and self._release_prefix_memory():
                    notes.append("The GPU ran out of memory: the kept video prefixes were moved to host RAM and "
                                 "the question asked again.")
                    continue
                lowered = self._lowered(qa)
                if lowered is None:
                    raise
                notes.append(f"The GPU ran out of memory with {qa.source.plan.max_frames} frames: the plan was lowered "
                             f"to {lowered.source.plan.max_frames} frames and the question asked again.")
                qa.source, qa.max_frames = lowered.source, lowered.max_frames
        if qa.last_result is not None:
            qa.last_result.warnings[:0] = notes
            src = qa.source
            stored = getattr(self.runtime.engine, "feature_memory", None) is not None  # its features are stored now
            if stored and hasattr(src, "input_hash") and hasattr(src, "info"):
                self.keep_plan(src.input_hash, src.info, src.plan)

    def _release_prefix_memory(self) -> bool:
        """Move the GPU's kept prefixes to host RAM (or drop them); True when there were any."""
        store = getattr(self.runtime.engine, "prefixes", None)
        release = getattr(store, "release_device", None)
        return bool(release()) if release is not None else False

    def _lowered(self, qa: "VideoQA") -> "VideoQA | None":
        """The same question session one step down the plan ladder, or None at the bottom."""
        from core.media.budget import lower_plan

        source = qa.source
        info = getattr(source, "info", None) or self.probe(source.path, getattr(source, "input_hash", None))
        estimate = self.plan(info, fps=source.plan.fps, max_frames=source.plan.max_frames).estimate
        plan = lower_plan(source.plan, estimate)
        if plan == source.plan:
            return None
        return self.questions(source.path, plan, getattr(source, "input_hash", None), info)

    def save_answer(self, input_hash: str, plan: SamplingPlan, question: str, result: "AnswerResult") -> None:
        """Keep an answer in the cache (the Library lists and searches it)."""
        self.runtime.cache.put_json(
            make_key(input_hash, ANSWERS_STAGE, {"q": question.strip(), "plan": plan.to_dict()}),
            {"question": question.strip(), "text": result.text, "events": [e.to_dict() for e in result.events]})

    # ------------------------------------------------------------------ conversations
    @property
    def conversations(self) -> "ConversationStore":
        """The videos' conversations, kept in the result cache by content hash."""
        from core.app.conversations import ConversationStore

        return ConversationStore(self.runtime.cache, "video")

    def conversation(self, input_hash: str) -> "Conversation":
        """The video's current conversation (empty when nothing was asked yet)."""
        return self.conversations.current(input_hash)

    def new_conversation(self, input_hash: str) -> "Conversation":
        """Start a new conversation about the video (the earlier one stays stored)."""
        return self.conversations.start_new(input_hash)

    def token_counter(self) -> Callable[[str], int]:
        """Counts tokens with the loaded model's tokenizer; an estimate while no model is loaded here."""
        from core.app.conversations import estimate_tokens, tokenizer_counter

        engine = self.runtime.engine if self.runtime.engine_made else None
        if engine is not None and getattr(engine, "loaded", False):
            tokenizer = getattr(getattr(engine, "processor", None), "tokenizer", None)
            if tokenizer is not None:
                return tokenizer_counter(tokenizer)
        return estimate_tokens

    def stream_turn(self, qa: "VideoQA", input_hash: str, question: str, params: "GenerationParams | None" = None,
                    refine: bool = True, budget_tokens: int | None = None) -> Iterator[str]:
        """One turn of the video's current conversation: the earlier turns (the newest that fit `budget_tokens`,
        default `HISTORY_TOKENS`) go to the model with the question, the answer streams, then the turn is stored
        (and the answer kept for the Library). Afterwards `qa.last_result` holds the answer; when older turns were
        left out, its first warning says so. A stream abandoned half way stores nothing."""
        from core.app.conversations import HISTORY_TOKENS, Turn

        talk = self.conversation(input_hash)
        history = talk.history(budget_tokens or HISTORY_TOKENS, self.token_counter())
        yield from self.stream_ask(qa, question, params, refine=refine, history=history.messages or None)
        result = qa.last_result
        if result is None:
            return
        note = history.note()
        if note:
            result.warnings.insert(0, note)
        self.conversations.add_turn(talk, Turn(
            question=question.strip(), answer=result.text, events=[e.to_dict() for e in result.events],
            seconds=result.seconds, warnings=list(result.warnings),
            detail={"frames_seen": result.frames_seen, "reused_prefix": result.reused_prefix,
                    "stored_features": result.stored_features, "refined": result.refined,
                    "history_turns": history.kept, "history_dropped": history.dropped,
                    "plan": qa.source.plan.to_dict() if hasattr(qa.source, "plan") else None,
                    **({"heard": result.heard, "sources": result.sources, "evidence": result.evidence}
                       if result.sources else {})}))
        self.save_answer(input_hash, qa.source.plan, question, result)

    # ------------------------------------------------------------------ captions, chapters, summary
    def captions(self, path: str | Path, options: "CaptionOptions", input_hash: str | None = None,
                 info: VideoInfo | None = None, progress: Progress | None = None,
                 cancel: CancelToken | None = None, engine: Any = None) -> Any:
        """Dense captions chunk by chunk with the runtime's engine (or `engine`, one wrapping it); each chunk is
        cached at once (resumable)."""
        from core.analysis.sources import MediaFrameSource
        from core.analysis.summary import caption_video

        source = MediaFrameSource(path, SamplingPlan(fps=options.fps), input_hash=input_hash, info=info)
        said = self.transcript(source.input_hash)  # with a transcript, each chunk is asked with its speech
        return caption_video(engine or self.runtime.engine, source, cache=self.runtime.cache, options=options,
                             progress=progress, cancel=cancel, input_hash=source.input_hash,
                             **({"speech": said} if said is not None else {}))

    def summarise(self, duration: float, events: list[Event], input_hash: str | None, max_new_tokens: int,
                  progress: Progress | None = None, cancel: CancelToken | None = None) -> Any:
        """Chapters and an overall summary from captions, on-screen text and, when the video has a transcript, what
        is said (cached per block)."""
        from core.analysis.heard import speech_blocks
        from core.analysis.summary import summarize_video

        if input_hash and not any(e.kind == "speech" for e in events):
            events = list(events) + speech_blocks(self.transcript(input_hash))

        return summarize_video(self.runtime.engine, duration, events, cache=self.runtime.cache, input_hash=input_hash,
                               max_new_tokens=max_new_tokens, progress=progress, cancel=cancel)

    def summary_key(self, input_hash: str, options: "CaptionOptions") -> str:
        """The job key of one captions + summary run."""
        return f"summary:{input_hash}:{_digest([options.chunk_s, options.fps, options.max_new_tokens])}"

    def summary_work(self, path: str | Path, input_hash: str, info: VideoInfo, options: "CaptionOptions",
                     max_new_tokens: int, text_events: list[Event] | None = None,
                     ) -> Callable[[JobContext], SummaryResult]:
        """The background job: captions chunk by chunk (each saved at once), then chapters and a summary."""
        def work(ctx: JobContext) -> SummaryResult:
            from core.analysis.summary import chunk_windows

            cap_share, ch_share = SUMMARY_WEIGHTS["captions"], SUMMARY_WEIGHTS["chapters"]
            ctx.progress(0.0, "starting", "captions")
            # progress moves inside each chunk too (by the tokens written), not only when a chunk ends: a one-chunk
            # video would otherwise sit at 0 % until it is done
            chunks = max(1, len(chunk_windows(info.duration, options.chunk_s, options.overlap_s)))
            at: dict[str, Any] = {"base": 0.0, "share": 0.0, "what": "captioning"}

            def chunk_progress(fraction: float, message: str = "", _stage: str = "") -> None:
                at.update(base=fraction, share=0.0, tokens=0, again="", what=message or at["what"])
                ctx.progress(cap_share * fraction, message, "captions")

            def token_progress(share: float, tokens: int) -> None:
                if tokens < at.get("tokens", 0):
                    at["again"] = " (second try)"  # the chunk's answer is asked again (it repeated itself)
                at["tokens"] = tokens
                at["share"] = max(at["share"], share)  # a retried answer does not move the bar back
                ctx.progress(cap_share * (at["base"] + at["share"] / chunks),
                             f"{at['what']}{at.get('again', '')}: {tokens} of at most {options.max_new_tokens} "
                             "tokens written", "captions")

            caps = self.captions(path, options, input_hash, info, cancel=ctx.cancel, progress=chunk_progress,
                                 engine=TokenProgressEngine(self.runtime.engine, token_progress))
            usable = list(caps.events) + [e for e in (text_events or []) if e.kind == "text" and e.label.strip()]
            from core.analysis.heard import speech_blocks

            usable += speech_blocks(self.transcript(input_hash))  # what is said, when a transcript was made
            if not usable:
                # said here, where it is known that captioning ran (the summariser alone would ask to caption first)
                from core.analysis.chapters import VideoSummary

                summ = VideoSummary(duration=info.duration, model=caps.model, problems=[no_captions_message(caps)])
                ctx.progress(1.0, "no usable captions", "chapters")
                return SummaryResult(caps, summ, list(caps.events))
            summ = self.summarise(info.duration, usable, input_hash, max_new_tokens, cancel=ctx.cancel,
                                  progress=lambda f, m="", _s="": ctx.progress(cap_share + ch_share * f, m,
                                                                               "chapters"))
            ctx.progress(1.0, f"{len(summ.chapters)} chapters", "chapters")
            return SummaryResult(caps, summ, list(caps.events) + [ch.to_event() for ch in summ.chapters])

        return work

    def start_summary(self, path: str | Path, input_hash: str, info: VideoInfo, options: "CaptionOptions",
                      max_new_tokens: int, text_events: list[Event] | None, title: str) -> Job:
        """Run captions + summary as a background job."""
        return self.runtime.jobs.submit(self.summary_key(input_hash, options), title,
                                        self.summary_work(path, input_hash, info, options, max_new_tokens,
                                                          text_events))


class TokenProgressEngine:
    """An engine that answers each `generate` by streaming from `engine`, reporting (share of the token cap written,
    tokens written) to `report` as the tokens come, every `every` tokens; everything else is `engine`'s."""

    def __init__(self, engine: Any, report: Callable[[float, int], None], every: int = 8) -> None:
        self._engine = engine
        self._report = report
        self._every = max(1, every)

    def generate(self, messages: Any, params: Any = None, kind: str = "chat") -> Any:
        cap = max(1, int(getattr(params, "max_new_tokens", 0) or 512))
        with self._engine.stream(messages, params, kind=kind) as stream:
            tokens = 0
            for _ in stream:
                tokens += 1
                if tokens % self._every == 0:
                    self._report(min(0.95, tokens / cap), tokens)
            result = stream.result
        assert result is not None
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def no_captions_message(captions: Any) -> str:
    """What a user reads when captioning ran but gave nothing to make chapters from."""
    n = len(getattr(captions, "chunks", []) or [])
    return (f"No chapters or summary: the model captioned the video ({n} chunk{'s' if n != 1 else ''}), but its "
            "captions held no timestamped events to make them from. A test model with random weights always gives "
            "this; with real weights, allow more tokens per chunk or use shorter chunks and run it again.")


# words a user reads for each stage (progress, Library): never the internal stage names
STAGE_LABELS = {"hash": "reading the file", "probe": "reading the file", "scenes": "scene cuts", "motion": "motion",
                "text": "on-screen text", "storyboard": "pictures along the video", "captions": "captions",
                "chapters": "chapters", "speech": "speech"}


def stage_label(stage: str) -> str:
    """The plain words for a stage name."""
    return STAGE_LABELS.get(stage, stage)


def storyboard_key(input_hash: str) -> Any:
    """The cache key of a video's storyboard (pictures along the timeline)."""
    return make_key(input_hash, STORYBOARD_STAGE, {"count": 16, "width": 112})
