"""Dense captions of a long video (chunk by chunk, saved as they come) and chapters + a summary (map-reduce).

Captions: the video is cut into chunks (default 60 s with 5 s overlap); each chunk's frames go to the
model with a structured prompt asking for events as JSON; the answer is validated (schema, times inside
the chunk, runaway repetition -> one retry with a higher presence penalty, a token cap per chunk) and
saved to the result cache at once, so a crash or restart resumes with the chunks not yet done.

Chapters: captions and on-screen text are grouped into blocks; each block becomes chapter candidates
(map), then the candidates become the final chapters and an overall summary (reduce).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from core.analysis.captions import CAPTION_PROMPT, CAPTION_SPEECH, is_runaway, parse_events, parse_seconds
from core.analysis.chapters import Chapter, VideoSummary, normalise_chapters
from core.analysis.heard import CAPTION_HEARD_TOKENS, Heard, heard_context
from core.events import Event, Progress, sort_events
from core.analysis.qa import FrameSource, clip_part
from core.analysis.timeparse import format_timestamp
from core.cache import ResultCache, make_key
from core.media.errors import Cancelled
from core.vlm.base import Engine
from core.vlm.types import GenerationParams, Message, user

PROMPT_VERSION = 1


@dataclass
class CaptionOptions:
    """How captions are made: chunk length and overlap (s), sampling fps inside a chunk, token cap per chunk."""

    chunk_s: float = 60.0
    overlap_s: float = 5.0
    fps: float = 1.0
    max_new_tokens: int = 512
    retry_presence_penalty: float = 1.5

    def __post_init__(self) -> None:
        if self.chunk_s <= 0 or self.overlap_s < 0 or self.overlap_s >= self.chunk_s:
            raise ValueError("chunk length must be > 0 and the overlap shorter than a chunk")
        if self.fps <= 0:
            raise ValueError("caption fps must be > 0")


@dataclass
class CaptionChunk:
    """One chunk's captions: its window, the events found, problems, whether it was retried."""

    start: float
    end: float
    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    retried: bool = False
    completion_tokens: int = 0


@dataclass
class Captions:
    """Every chunk's captions and the events of the whole video (overlaps merged)."""

    chunks: list[CaptionChunk]
    events: list[Event]
    model: str = ""
    seconds: float = 0.0

    @property
    def message(self) -> str:
        """What a user reads when nothing usable came back."""
        if self.events:
            return f"{len(self.events)} events in {len(self.chunks)} chunks."
        return "No events found: the model's answers held no usable timestamped events."

    def to_dict(self) -> dict[str, Any]:
        return {"chunks": [asdict(c) for c in self.chunks], "events": [e.to_dict() for e in self.events],
                "model": self.model, "seconds": self.seconds}


def chunk_windows(duration: float, chunk_s: float, overlap_s: float) -> list[tuple[float, float]]:
    """[start, end] of each chunk: `chunk_s` long, consecutive chunks sharing `overlap_s` seconds."""
    if duration <= 0:
        return []
    windows, start = [], 0.0
    step = chunk_s - overlap_s
    while True:
        end = min(duration, start + chunk_s)
        windows.append((round(start, 3), round(end, 3)))
        if end >= duration:
            break
        start += step
    # a last chunk adding no more new seconds than the overlap: fold it into the previous chunk
    if len(windows) > 1 and windows[-1][1] - windows[-2][1] <= overlap_s:
        windows.pop()
        windows[-1] = (windows[-1][0], duration)
    return windows


def merge_overlaps(events: list[Event], tolerance: float = 2.0) -> list[Event]:
    """Events in time order, with the copies that two overlapping chunks both reported merged."""
    out: list[Event] = []
    for e in sort_events(events):
        twin = next((o for o in out[-4:] if o.label.strip().lower() == e.label.strip().lower()
                     and abs(o.start - e.start) <= tolerance), None)
        if twin is not None:
            twin.end = max(twin.end, e.end)
            continue
        out.append(e)
    return out


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("captioning was cancelled; finished chunks are saved and will be reused")


def caption_video(engine: Engine, source: FrameSource, cache: ResultCache | None = None,
                  options: CaptionOptions | None = None, progress: Progress | None = None,
                  cancel: threading.Event | None = None, input_hash: str | None = None,
                  speech: Any = None) -> Captions:
    """Dense captions, chunk by chunk; each finished chunk is cached at once (a rerun resumes).

    `speech`: the video's transcript (core.speech.types.Transcript) or None; with one, each chunk's request carries
    the speech of that chunk ("Heard around m:ss-m:ss: ...", at most CAPTION_HEARD_TOKENS) and its cache entry is
    keyed by that speech too (a chunk without speech keeps the key it always had)."""
    options = options or CaptionOptions()
    started = time.perf_counter()
    duration = source.duration()
    windows = chunk_windows(duration, options.chunk_s, options.overlap_s)
    model = engine.info().model
    key_hash = input_hash or source.content_key().split(":")[0]
    chunks: list[CaptionChunk] = []
    for n, (lo, hi) in enumerate(windows):
        _check_cancel(cancel)
        params = {"start": lo, "end": hi, "fps": options.fps, "max_new_tokens": options.max_new_tokens,
                  "prompt": PROMPT_VERSION, "plan": source.content_key()}
        heard = heard_context(speech, [(lo, hi)], budget_tokens=CAPTION_HEARD_TOKENS, pad_s=0.0,
                              where=" in this part") if speech is not None else Heard()
        if heard:
            params["speech"] = heard.digest()
        key = make_key(key_hash, "captions", params, model=model)
        cached = cache.get_json(key) if cache is not None else None
        if cached is not None:
            chunk = CaptionChunk(**cached)
        else:
            if progress:
                progress(n / max(1, len(windows)), f"captioning {format_timestamp(lo)}-{format_timestamp(hi)}")
            chunk = _caption_chunk(engine, source, lo, hi, options, cancel, heard)
            if cache is not None:
                cache.put_json(key, asdict(chunk))
        chunks.append(chunk)
        if progress:
            progress((n + 1) / max(1, len(windows)), f"{n + 1} of {len(windows)} chunks done")
    events = merge_overlaps([Event.from_dict(e) for c in chunks for e in c.events])
    return Captions(chunks=chunks, events=events, model=model, seconds=time.perf_counter() - started)


def _caption_chunk(engine: Engine, source: FrameSource, lo: float, hi: float, options: CaptionOptions,
                   cancel: threading.Event | None, heard: Heard | None = None) -> CaptionChunk:
    clip = source.window(lo, hi, options.fps)
    prompt = CAPTION_PROMPT.format(start=format_timestamp(lo), end=format_timestamp(hi), start_s=lo, end_s=hi)
    if heard:
        prompt = heard.prompt(f"{prompt} {CAPTION_SPEECH}")
    messages = [user(clip_part(clip), prompt)]
    params = GenerationParams(max_new_tokens=options.max_new_tokens, temperature=0.0, presence_penalty=0.0)
    result = engine.generate(messages, params, kind="captions")
    parsed = parse_events(result.text, window=(lo, hi))
    retried = False
    runaway = is_runaway(result.text)
    if runaway or (not parsed.events and result.finish_reason == "length"):
        _check_cancel(cancel)
        retried = True
        retry = GenerationParams(max_new_tokens=options.max_new_tokens, temperature=0.0,
                                 presence_penalty=options.retry_presence_penalty)
        result = engine.generate(messages, retry, kind="captions-retry")
        again = parse_events(result.text, window=(lo, hi))
        why = "repeated itself" if runaway else "hit the token cap with no usable event"
        again.problems.insert(0, f"the first answer {why}; retried with a higher presence penalty")
        parsed = again
    return CaptionChunk(start=lo, end=hi, events=[e.to_dict() for e in parsed.events], problems=parsed.problems,
                        retried=retried, completion_tokens=result.completion_tokens)


# -- chapters and summary ----------------------------------------------------------------------

MAP_PROMPT = (
    "Here are timestamped events from part of a video ({start} to {end}):\n{lines}\n\n"
    "Group them into 1 to 4 chapters. Answer with JSON only: "
    '[{{"start": <seconds>, "end": <seconds>, "title": "<3-8 words>", "summary": "<one or two sentences>"}}]'
)
REDUCE_PROMPT = (
    "A video lasting {duration} has these chapter candidates:\n{lines}\n\n"
    "Merge them into the final chapters (in order, covering the video) and write an overall summary. Answer "
    'with JSON only: {{"chapters": [{{"start": <seconds>, "end": <seconds>, "title": "...", "summary": "..."}}], '
    '"summary": "<3-5 sentences>"}}'
)


def _event_lines(events: list[Event]) -> list[str]:
    return [f"[{format_timestamp(e.start)}-{format_timestamp(e.end)}] ({e.kind}) {e.label}" for e in events]


def _parse_chapters(text: str, window: tuple[float, float]) -> tuple[list[Chapter], str, list[str]]:
    parsed = parse_events(text, window=window, kind="chapter", source="vlm.chapters", tolerance=5.0)
    chapters = []
    for e in parsed.events:
        raw = e.detail.get("raw", {})
        title = str(raw.get("title") or e.label).strip()
        summary = str(raw.get("summary") or "").strip()
        chapters.append(Chapter(e.start, e.end, title[:120], summary[:1000]))
    overall = ""
    try:
        body = text[text.find("{"): text.rfind("}") + 1]
        data = json.loads(body) if body else None
        if isinstance(data, dict) and isinstance(data.get("summary"), str):
            overall = data["summary"].strip()
    except json.JSONDecodeError:
        pass
    return chapters, overall, parsed.problems


def summarize_video(engine: Engine, duration: float, events: list[Event], cache: ResultCache | None = None,
                    input_hash: str | None = None, block_events: int = 40, max_new_tokens: int = 512,
                    progress: Progress | None = None, cancel: threading.Event | None = None) -> VideoSummary:
    """Chapters and an overall summary from captions, on-screen text (slides) and speech (`speech` events, e.g.
    core.analysis.heard.speech_blocks of the transcript), map-reduce over blocks of events."""
    model = engine.info().model
    usable = [e for e in sort_events(events) if e.kind in ("vlm", "caption", "text", "speech") and e.label.strip()]
    summary = VideoSummary(duration=duration, model=model)
    if not usable:
        summary.problems.append("No captions or on-screen text to summarise: caption the video first.")
        return summary
    key = None
    if cache is not None and input_hash:
        material = {"events": [[e.kind, round(e.start, 2), round(e.end, 2), e.label] for e in usable],
                    "block": block_events, "prompt": PROMPT_VERSION, "tokens": max_new_tokens}
        key = make_key(input_hash, "chapters", material, model=model)
        cached = cache.get_json(key)
        if cached is not None:
            return VideoSummary.from_dict(cached)
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0, presence_penalty=0.0)
    blocks = [usable[i:i + block_events] for i in range(0, len(usable), block_events)]
    candidates: list[Chapter] = []
    for n, block in enumerate(blocks):
        _check_cancel(cancel)
        lo, hi = block[0].start, max(e.end for e in block)
        prompt = MAP_PROMPT.format(start=format_timestamp(lo), end=format_timestamp(hi),
                                   lines="\n".join(_event_lines(block)))
        answer = engine.generate([Message("user", prompt)], params, kind="chapters-map")
        found, _, problems = _parse_chapters(answer.text, (0.0, duration))
        candidates.extend(found)
        summary.problems.extend(f"block {n + 1}: {p}" for p in problems[:3])
        if progress:
            progress((n + 1) / (len(blocks) + 1), f"chapters: block {n + 1} of {len(blocks)}")
    _check_cancel(cancel)
    final: list[Chapter] = []
    if candidates:
        lines = [f"[{format_timestamp(c.start)}-{format_timestamp(c.end)}] {c.title}: {c.summary}" for c in candidates]
        prompt = REDUCE_PROMPT.format(duration=format_timestamp(duration), lines="\n".join(lines))
        answer = engine.generate([Message("user", prompt)], params, kind="chapters-reduce")
        final, summary.summary, problems = _parse_chapters(answer.text, (0.0, duration))
        summary.problems.extend(f"merge: {p}" for p in problems[:3])
        if not final:
            final = candidates  # the merge answer was unusable: keep the blocks' chapters
    summary.chapters = normalise_chapters(final, duration)
    if not summary.summary and summary.chapters:
        summary.summary = " ".join(c.summary for c in summary.chapters if c.summary)
    if not summary.chapters:
        summary.problems.insert(0, "No chapters found: the model's answers held no usable chapters.")
    if progress:
        progress(1.0, f"{len(summary.chapters)} chapters")
    if key is not None and summary.chapters:
        cache.put_json(key, summary.to_dict())
    return summary


__all__ = ["CaptionChunk", "CaptionOptions", "Captions", "caption_video", "chunk_windows", "merge_overlaps",
           "parse_seconds", "summarize_video"]
