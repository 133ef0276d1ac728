"""Time-aware questions about a video, answered by the engine, with the answer's times as events.

A question naming a time ("at 3:15", "第3分15秒", "the last minute") is answered from the whole-video
overview plus that stretch sampled densely (at least 2 fps). Other questions use the overview; when
the answer names times, a second pass (switchable) looks again at those moments at a higher fps and
refines them (coarse to fine). The overview keeps its KV cache in the engine, so follow-up questions
on the same video skip re-encoding it.

On an engine with a visual memory (a local engine with a feature store), the overview, each dense stretch and
each refine window are encoded once and their visual features kept beside the video in the result cache: any
later question, in any process, asks with feature-backed clips (no frame decoding, no vision tower). A time
question's clip is then made of the overview's frame pairs and the stretch's, the stretch encoded at the
overview's frame size. A damaged stored entry is reported in the answer's warnings and computed again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from core.events import Event
from core.analysis.heard import (
    HEARD_TOKENS,
    REFINE_HEARD_TOKENS,
    Heard,
    frame_source,
    heard_context,
    mark_sources,
)
from core.analysis.timeparse import TimeReference, find_time_mentions, format_timestamp, parse_time_reference
from core.vlm.base import Engine, InvalidRequest
from core.vlm.featurestore import StoredFeaturesUnreadable
from core.vlm.types import GenerationParams, Message, VideoPart, user

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You answer questions about a video. Each pair of frames is preceded by its time as <t seconds>. "
    "When you mention a moment, give its time as mm:ss (or h:mm:ss)."
)


@dataclass
class Clip:
    """Frames sampled from a video: pixels, their source frame numbers, the source fps and frame count.

    A feature-backed clip has no pixels (`frames` empty): `features_from` names the stored visual features it is
    made of and `frame_hw` the size its frames had."""

    frames: list[Any]
    indices: list[int]
    fps: float
    total_frames: int
    max_pixels_total: int | None = None
    min_pixels_total: int | None = None
    features_from: tuple[str, ...] = ()
    frame_hw: tuple[int, int] | None = None

    @property
    def times(self) -> list[float]:
        return [i / self.fps for i in self.indices]

    @property
    def size(self) -> tuple[int, int] | None:
        """(height, width) of its frames."""
        return tuple(np.asarray(self.frames[0]).shape[:2]) if self.frames else self.frame_hw  # type: ignore[return-value]


class FrameSource(Protocol):
    """Where Q&A gets frames: a video's duration and clips of it (the media pipeline implements it)."""

    def duration(self) -> float:
        ...

    def content_key(self) -> str:
        """A key naming the video's content (its sha256) and the overview's sampling plan."""
        ...

    def overview(self) -> Clip:
        """The whole video at the plan's budget."""
        ...

    def window(self, start: float, end: float, fps: float, like: Clip | None = None) -> Clip:
        """[start, end] at `fps` (at most the plan's max frames), frames sized like `like` when given."""
        ...


@dataclass
class AnswerResult:
    """An answer, the times it names as `answer` events, and what the model was shown."""

    question: str
    text: str
    events: list[Event] = field(default_factory=list)
    time_reference: tuple[float, float] | None = None
    dense_windows: list[tuple[float, float]] = field(default_factory=list)
    frames_seen: int = 0
    refined: bool = False
    reused_prefix: bool = False
    stored_features: bool = False
    """The video's visual features came from the store: nothing was decoded, the vision tower did not run."""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    heard: list[dict[str, Any]] = field(default_factory=list)
    """The speech given to the model with the question ({"start", "end", "text"}), from the video's transcript;
    empty when the video has none."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """What the answer rests on: the frames seen ({"evidence": "seen", "what": "frames", ...}) and each stretch
    of speech heard ({"evidence": "heard", "what": "speech", "start", "end", "text", "used"}); see
    core.analysis.heard.mark_sources."""

    @property
    def evidence(self) -> str:
        """'seen', 'heard' or 'seen and heard': what the answer's evidence was."""
        from core.analysis.heard import evidence_words

        return evidence_words(self.sources)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["events"] = [e.to_dict() for e in self.events]
        data["evidence"] = self.evidence
        return data


def clip_part(clip: Clip, cache_key: str | None = None) -> VideoPart:
    """The engine's VideoPart of a clip (real frame numbers and fps, the plan's pixel budget)."""
    return VideoPart(clip.frames, clip.indices, source_fps=clip.fps, total_frames=clip.total_frames,
                     max_pixels_total=clip.max_pixels_total, min_pixels_total=clip.min_pixels_total,
                     cache_key=cache_key, features_from=clip.features_from)


def feature_clip(meta: Any, cache_key: str) -> Clip:
    """The feature-backed clip of the features stored under `cache_key` (`meta`: their FeatureMeta)."""
    return Clip([], list(meta.frame_indices), meta.source_fps, meta.total_frames, meta.max_pixels_total,
                meta.min_pixels_total, features_from=(cache_key,), frame_hw=(meta.frame_hw[0], meta.frame_hw[1]))


def merge_groups(overview: list[int], window: list[int], max_frames: int, temporal: int = 2) -> list[int]:
    """Frame numbers of every whole frame group (pair) of `window` and of the overview's pairs outside it, thinned
    to stay within `max_frames`, in time order: each pair stays one stored temporal group."""
    def pairs(idx: list[int]) -> list[tuple[int, ...]]:
        return [tuple(idx[k:k + temporal]) for k in range(0, len(idx) - len(idx) % temporal, temporal)]

    dense = pairs(window)
    lo, hi = (dense[0][0], dense[-1][-1]) if dense else (0, -1)
    rest = [p for p in pairs(overview) if p[-1] < lo or p[0] > hi]
    room = max(0, max_frames // temporal - len(dense))
    if len(rest) > room:
        step = len(rest) / max(room, 1)
        rest = [rest[int(k * step)] for k in range(room)]
    return [i for p in sorted(rest + dense) for i in p]


def merge_clips(a: Clip, b: Clip, max_frames: int) -> Clip:
    """Frames of both clips in time order (duplicates once), thinning `a` first to stay within `max_frames`."""
    keep_b = dict(zip(b.indices, b.frames))
    rest = [(i, f) for i, f in zip(a.indices, a.frames) if i not in keep_b]
    room = max(0, max_frames - len(keep_b))
    if len(rest) > room:
        step = len(rest) / max(room, 1)
        rest = [rest[int(k * step)] for k in range(room)]
    merged = sorted([*rest, *keep_b.items()], key=lambda x: x[0])
    if len(merged) % 2:
        merged = merged[:-1] if len(merged) > 2 else merged
    return Clip([f for _, f in merged], [i for i, _ in merged], a.fps, a.total_frames, a.max_pixels_total,
                a.min_pixels_total)


def flag_time(t: float, duration: float, seen: list[float]) -> str | None:
    """Why a time in an answer is doubtful: outside the video, or far from every frame the model saw."""
    if t < 0 or t > duration + 0.5:
        return f"outside the video (it lasts {format_timestamp(duration)})"
    if seen:
        gaps = [b - a for a, b in zip(seen, seen[1:])] or [duration]
        tolerance = max(2.0, max(gaps))
        nearest = min(abs(t - s) for s in seen)
        if nearest > tolerance:
            return f"not among the frames the model saw (nearest {nearest:.0f} s away)"
    return None


def answer_events(text: str, question: str, duration: float, seen: list[float]) -> list[Event]:
    """Every time named in `text` as an `answer` event, flagged when doubtful."""
    events = []
    for m in find_time_mentions(text):
        end = m.end if m.end is not None else m.start
        sentence_start = max(text.rfind(".", 0, m.offset), text.rfind("\n", 0, m.offset)) + 1
        sentence_end = min([i for i in (text.find(".", m.offset + len(m.text)), text.find("\n", m.offset)) if i >= 0],
                           default=len(text))
        label = text[sentence_start:sentence_end].strip()[:200] or m.text
        flag = flag_time(m.start, duration, seen) or (flag_time(end, duration, seen) if end != m.start else None)
        events.append(Event(kind="answer", start=max(0.0, m.start), end=max(0.0, end), label=label,
                            detail={"question": question, "mention": m.text, "flag": flag},
                            confidence=None if flag is None else 0.2, source="vlm.qa"))
    return events


def _declared_duration(source: Any) -> float | None:
    """The duration a truncated file claims, when the source knows its probe (MediaFrameSource does)."""
    declared = getattr(getattr(source, "info", None), "declared_duration", None)
    return float(declared) if declared else None


def past_end_warning(ref: TimeReference, duration: float, declared: float | None) -> str | None:
    """What to tell the user when the asked time lies (partly) past the part of the video that can be read."""
    end = ref.end if ref.end > ref.start else ref.start
    if end <= duration + 0.5:
        return None
    asked = format_timestamp(ref.start) + (f"-{format_timestamp(ref.end)}" if ref.end > ref.start else "")
    readable = format_timestamp(float(int(duration)))  # rounded down: never promise a second that is not there
    if declared and declared > duration:
        where = (f"the file can only be read up to {readable} of {format_timestamp(declared)} "
                 "(it looks truncated: the copy or download did not finish)")
        fix = " Copy the file again to ask about the rest."
    else:
        where, fix = f"the video ends at {readable}", ""
    if ref.start >= duration:
        return f"You asked about {asked}, but {where}: that moment cannot be seen, so it was not asked.{fix}"
    return f"You asked about {asked}, but {where}: only {format_timestamp(ref.start)}-{readable} was looked at.{fix}"


class _ClipCache:
    """A few recent overview clips in memory (per content key), so follow-ups do not decode again."""

    def __init__(self, size: int = 4) -> None:
        self._items: OrderedDict[str, Clip] = OrderedDict()
        self._lock = threading.Lock()
        self.size = size

    def get_or_make(self, key: str, make: Callable[[], Clip]) -> Clip:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        clip = make()
        with self._lock:
            self._items[key] = clip
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return clip


_OVERVIEWS = _ClipCache()


class VideoQA:
    """Questions about one video. `stream_answer` yields text as it comes, then sets `last_result`."""

    def __init__(self, engine: Engine, source: FrameSource, max_frames: int = 768, dense_fps: float = 2.0,
                 refine_fps: float = 4.0, refine_radius: float = 6.0) -> None:
        self.engine = engine
        self.source = source
        self.max_frames = max_frames
        self.dense_fps = max(2.0, dense_fps)
        self.refine_fps = refine_fps
        self.refine_radius = refine_radius
        self.last_result: AnswerResult | None = None
        self.speech: Any = None
        """The video's transcript (core.speech.types.Transcript), or None: with one, the speech around the times a
        question concerns goes into its prompt ("Heard around m:ss-m:ss: ...", at most `heard_tokens`)."""
        self.heard_tokens = HEARD_TOKENS
        self.count_tokens: Callable[[str], int] | None = None

    def heard_for(self, question: str, ref: TimeReference | None, duration: float) -> Heard:
        """The speech to give with `question`: around the window it names (nearest its moment first), else the
        speech that fits, the parts sharing its words first. Empty without a transcript."""
        if self.speech is None:
            return Heard()
        windows = [ref.window(duration)] if ref is not None else None
        focus = ref.start if ref is not None and ref.is_point else None
        return heard_context(self.speech, windows, question=question, focus=focus, budget_tokens=self.heard_tokens,
                             count=self.count_tokens)

    def _memory(self) -> Any:
        """The engine's visual memory (`core.vlm.featurestore.FeatureMemory`), or None: a remote engine, or one
        without a feature store, is given decoded frames every time."""
        return getattr(self.engine, "feature_memory", None)

    def _stored(self, memory: Any, key: str, result: AnswerResult) -> Any:
        """The plan of the features stored under `key`, or None (a damaged entry is reported in the warnings)."""
        try:
            return memory.lookup(key)
        except StoredFeaturesUnreadable as exc:
            result.warnings.append(f"{exc.cause}; they were computed again from the video's frames.")
            return None

    def _decoded(self) -> Clip:
        """The overview's frames (kept in memory for follow-ups)."""
        return _OVERVIEWS.get_or_make(self.source.content_key(), self.source.overview)

    def _overview(self, memory: Any, result: AnswerResult, whole: bool = False) -> Clip:
        """The overview: feature-backed when its features are stored (nothing decoded), or ingested now (decoded and
        encoded part by part, pipelined, and stored), else decoded. `whole`: the question is about the whole video,
        so its kept prefix is prefilled during the ingest."""
        key = self.source.content_key()
        meta = self._stored(memory, key, result) if memory is not None else None
        if meta is None and memory is not None:
            meta = self._ingest(memory, key, whole)
        return feature_clip(meta, key) if meta is not None else self._decoded()

    def _ingest(self, memory: Any, key: str, whole: bool = False) -> Any:
        """The plan of the overview's features after a pipelined ingest (`FeatureMemory.ingest`), or None where the
        source cannot stream its frames (the decoded frames are then encoded when the question runs). `whole`: the
        kept prefix of a question about the whole video is prefilled during the ingest."""
        make = getattr(self.source, "ingest_input", None)
        if make is None:
            return None
        prefix_of = (lambda meta: self.prefix_messages(meta, key)) if whole else None
        try:
            return memory.ingest(key, make(), prefix_of=prefix_of).meta
        except InvalidRequest as exc:
            log.info("the overview is decoded whole instead of ingested: %s", exc)
            return None

    def _clips(self, memory: Any, ref: TimeReference | None, duration: float,
               result: AnswerResult) -> tuple[Clip, Clip, str | None]:
        """(the overview, the clip to ask with, its cache key)."""
        overview = self._overview(memory, result, whole=ref is None)
        if ref is None:
            return overview, overview, self.source.content_key()
        lo, hi = ref.window(duration)
        if memory is None:
            dense = self.source.window(lo, hi, self.dense_fps, like=overview)
            return overview, merge_clips(overview, dense, self.max_frames), None  # a one-off mix: nothing to reuse
        return (overview, *self._feature_mix(memory, overview, lo, hi, result))

    def _feature_mix(self, memory: Any, overview: Clip, lo: float, hi: float, result: AnswerResult) -> tuple[Clip, str]:
        """The overview's frame pairs outside [lo, hi] and that stretch at `dense_fps`, from stored features, each
        encoded once (the stretch at the overview's frame size, so that their frame pairs fit together)."""
        key = self.source.content_key()
        ov = self._stored(memory, key, result)
        if ov is None:
            ov = memory.encode(clip_part(overview if overview.frames else self._decoded(), key))
        wkey = f"{key}|dense:{lo:.2f}-{hi:.2f}@{self.dense_fps:g}"
        win = self._stored(memory, wkey, result)
        if win is None:
            dense = self.source.window(lo, hi, self.dense_fps, like=overview)
            win = memory.encode(clip_part(dense, wkey), frame_size=(ov.resized[0], ov.resized[1]))
        # as many frames as the overview's pixel budget holds at its frame size (at least the overview's)
        fit = ov.max_pixels_total // (ov.resized[0] * ov.resized[1]) if ov.max_pixels_total else 0
        room = min(self.max_frames, max(len(ov.frame_indices), fit))
        indices = merge_groups(ov.frame_indices, win.frame_indices, room, ov.temporal_patch)
        clip = Clip([], indices, ov.source_fps, ov.total_frames, ov.max_pixels_total, ov.min_pixels_total,
                    features_from=(key, wkey), frame_hw=(ov.frame_hw[0], ov.frame_hw[1]))
        return clip, f"{wkey}|with-overview:{room}"

    def _open(self, clip: Clip, prompt: str, history: list[Message] | None, cache_key: str | None,
              params: GenerationParams | None, kind: str, result: AnswerResult,
              again: Callable[[], tuple[Clip, str | None]]) -> tuple[Any, Clip]:
        """The engine's stream for `clip`; stored features that turn out unusable are reported in the warnings and
        the clip is made again (`again`: decoded, encoded and stored anew)."""
        try:
            return self.engine.stream(self._messages(clip, prompt, history, cache_key), params, kind=kind), clip
        except StoredFeaturesUnreadable as exc:
            result.warnings.append(f"{exc.cause}; they were computed again from the video's frames.")
            clip, cache_key = again()
            return self.engine.stream(self._messages(clip, prompt, history, cache_key), params, kind=kind), clip

    def prefix_messages(self, meta: Any, key: str) -> list[Message]:
        """The messages of a question about the whole video whose features `meta` plans (stored under `key`), the
        question aside: their kept prefix (everything up to the end of the video) is what an ingest prefills while
        it encodes, so the first question only prefills its own words."""
        return self._messages(feature_clip(meta, key), "", None, key)

    def _messages(self, clip: Clip, question: str, history: list[Message] | None, cache_key: str | None) -> list[Message]:
        part = clip_part(clip, cache_key)
        messages = [Message("system", SYSTEM_PROMPT)]
        if history:
            # the video stays in the first user turn so its KV cache is the shared prefix
            first, *rest = history
            messages.append(user(part, *[p for p in first.parts()]))
            messages.extend(rest)
            messages.append(user(question))
        else:
            messages.append(user(part, question))
        return messages

    def stream_answer(self, question: str, params: GenerationParams | None = None,
                      history: list[Message] | None = None, refine: bool = True) -> Iterator[str]:
        """Yield the answer's text chunks; afterwards `last_result` holds the AnswerResult."""
        started = time.perf_counter()
        duration = self.source.duration()
        ref: TimeReference | None = parse_time_reference(question, duration)
        result = AnswerResult(question=question, text="")
        past_end = past_end_warning(ref, duration, _declared_duration(self.source)) if ref is not None else None
        if past_end is not None:
            result.warnings.append(past_end)
            if ref is not None and ref.start >= duration:
                # nothing of the asked moment can be shown: any answer would describe another moment
                result.time_reference = (ref.start, ref.end)
                result.text = past_end
                yield past_end
                result.seconds = time.perf_counter() - started
                self.last_result = result
                return
        memory = self._memory()
        overview, clip, cache_key = self._clips(memory, ref, duration, result)
        if ref is not None:
            result.time_reference = (ref.start, ref.end)
            result.dense_windows.append(ref.window(duration))
        heard = self.heard_for(question, ref, duration)
        result.heard = heard.to_list()
        stream, clip = self._open(clip, heard.prompt(question, ask_evidence=True), history, cache_key, params,
                                  "video-qa", result, lambda: self._clips(memory, ref, duration, result)[1:])
        result.frames_seen = len(clip.indices)
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            yield chunk
        final = stream.result
        result.text = final.text if final is not None else "".join(chunks)
        result.reused_prefix = bool(final and final.metrics.reused_prefix_tokens)
        # a feature-backed clip is answered from the visual memory: its stored features, or the kept prefix made
        # from them (prefilled while the video was ingested, or by an earlier question)
        result.stored_features = bool(clip.features_from) or bool(final and final.metrics.visual_features == "stored")
        seen = clip.times
        result.events = answer_events(result.text, question, duration, seen)
        if refine and ref is None and result.events:
            self._refine(result, overview, duration, params, memory)
        if self.speech is not None:
            result.sources = mark_sources(result.text, heard, frame_source(seen), result.events)
        if not result.events:
            result.warnings.append("The answer names no time in the video.")
        result.seconds = time.perf_counter() - started
        self.last_result = result

    def ask(self, question: str, params: GenerationParams | None = None, history: list[Message] | None = None,
            refine: bool = True) -> AnswerResult:
        """The whole answer (see `stream_answer`)."""
        for _ in self.stream_answer(question, params, history, refine):
            pass
        assert self.last_result is not None
        return self.last_result

    def _refine(self, result: AnswerResult, overview: Clip, duration: float, params: GenerationParams | None,
                memory: Any = None) -> None:
        """Coarse to fine: look again around each time the answer named, at a higher fps (with a visual memory,
        each window is encoded once and kept beside the overview)."""
        greedy = GenerationParams(max_new_tokens=48, temperature=0.0, presence_penalty=0.0,
                                  seed=params.seed if params else None)
        for event in result.events[:3]:
            if event.detail.get("flag"):
                continue
            lo = max(0.0, event.start - self.refine_radius)
            hi = min(duration, event.end + self.refine_radius)
            key = f"{self.source.content_key()}|refine:{lo:.2f}-{hi:.2f}@{self.refine_fps:g}" if memory else None

            def window(lo: float = lo, hi: float = hi, key: str | None = key) -> tuple[Clip, str | None]:
                meta = self._stored(memory, key, result) if memory is not None and key else None
                if meta is not None:
                    return feature_clip(meta, key), key
                return self.source.window(lo, hi, self.refine_fps, like=overview), key

            clip, key = window()
            prompt = (f"The question was: {result.question}\nA first look placed the answer near "
                      f"{format_timestamp(event.start)}. This clip shows {format_timestamp(lo)} to "
                      f"{format_timestamp(hi)} in detail. Give the precise time as mm:ss, and nothing else.")
            if self.speech is not None:
                prompt = heard_context(self.speech, [(lo, hi)], focus=event.start, budget_tokens=REFINE_HEARD_TOKENS,
                                       count=self.count_tokens, where=" in this clip").prompt(prompt)
            stream, clip = self._open(clip, prompt, None, key, greedy, "video-qa-refine", result, window)
            with stream:
                answer = stream.collect()
            mentions = [m for m in find_time_mentions(answer.text) if lo - 1 <= m.start <= hi + 1]
            result.dense_windows.append((lo, hi))
            if mentions:
                m = mentions[0]
                event.detail["coarse"] = [event.start, event.end]
                event.start = m.start
                event.end = max(m.start, m.end if m.end is not None else m.start)
                event.detail["refined"] = True
                result.refined = True
