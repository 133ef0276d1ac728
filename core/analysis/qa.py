"""Time-aware questions about a video, answered by the engine, with the answer's times as events.

A question naming a time ("at 3:15", "第3分15秒", "the last minute") is answered from the whole-video
overview plus that stretch sampled densely (at least 2 fps). Other questions use the overview; when
the answer names times, a second pass (switchable) looks again at those moments at a higher fps and
refines them (coarse to fine). The overview keeps its KV cache in the engine, so follow-up questions
on the same video skip re-encoding it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Protocol

from core.events import Event
from core.analysis.timeparse import TimeReference, find_time_mentions, format_timestamp, parse_time_reference
from core.vlm.base import Engine
from core.vlm.types import GenerationParams, Message, VideoPart, user

SYSTEM_PROMPT = (
    "You answer questions about a video. Each pair of frames is preceded by its time as <t seconds>. "
    "When you mention a moment, give its time as mm:ss (or h:mm:ss)."
)


@dataclass
class Clip:
    """Frames sampled from a video: pixels, their source frame numbers, the source fps and frame count."""

    frames: list[Any]
    indices: list[int]
    fps: float
    total_frames: int
    max_pixels_total: int | None = None
    min_pixels_total: int | None = None

    @property
    def times(self) -> list[float]:
        return [i / self.fps for i in self.indices]


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
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["events"] = [e.to_dict() for e in self.events]
        return data


def clip_part(clip: Clip, cache_key: str | None = None) -> VideoPart:
    """The engine's VideoPart of a clip (real frame numbers and fps, the plan's pixel budget)."""
    return VideoPart(clip.frames, clip.indices, source_fps=clip.fps, total_frames=clip.total_frames,
                     max_pixels_total=clip.max_pixels_total, min_pixels_total=clip.min_pixels_total,
                     cache_key=cache_key)


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

    def _overview(self) -> Clip:
        return _OVERVIEWS.get_or_make(self.source.content_key(), self.source.overview)

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
        overview = self._overview()
        if ref is not None:
            lo, hi = ref.window(duration)
            dense = self.source.window(lo, hi, self.dense_fps, like=overview)
            clip = merge_clips(overview, dense, self.max_frames)
            result.time_reference = (ref.start, ref.end)
            result.dense_windows.append((lo, hi))
            cache_key = None  # a one-off mix of frames: nothing to reuse
        else:
            clip = overview
            cache_key = self.source.content_key()
        result.frames_seen = len(clip.indices)
        stream = self.engine.stream(self._messages(clip, question, history, cache_key), params, kind="video-qa")
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            yield chunk
        final = stream.result
        result.text = final.text if final is not None else "".join(chunks)
        result.reused_prefix = bool(final and final.metrics.reused_prefix_tokens)
        seen = clip.times
        result.events = answer_events(result.text, question, duration, seen)
        if refine and ref is None and result.events:
            self._refine(result, overview, duration, params)
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

    def _refine(self, result: AnswerResult, overview: Clip, duration: float, params: GenerationParams | None) -> None:
        """Coarse to fine: look again around each time the answer named, at a higher fps."""
        greedy = GenerationParams(max_new_tokens=48, temperature=0.0, presence_penalty=0.0,
                                  seed=params.seed if params else None)
        for event in result.events[:3]:
            if event.detail.get("flag"):
                continue
            lo = max(0.0, event.start - self.refine_radius)
            hi = min(duration, event.end + self.refine_radius)
            clip = self.source.window(lo, hi, self.refine_fps, like=overview)
            prompt = (f"The question was: {result.question}\nA first look placed the answer near "
                      f"{format_timestamp(event.start)}. This clip shows {format_timestamp(lo)} to "
                      f"{format_timestamp(hi)} in detail. Give the precise time as mm:ss, and nothing else.")
            answer = self.engine.generate(self._messages(clip, prompt, None, None), greedy, kind="video-qa-refine")
            mentions = [m for m in find_time_mentions(answer.text) if lo - 1 <= m.start <= hi + 1]
            result.dense_windows.append((lo, hi))
            if mentions:
                m = mentions[0]
                event.detail["coarse"] = [event.start, event.end]
                event.start = m.start
                event.end = max(m.start, m.end if m.end is not None else m.start)
                event.detail["refined"] = True
                result.refined = True
