"""What was said in a video, for the analyses that read it: a transcript's segments as `speech` events (the
timeline's Speech lane, the Library), longer stretches of speech for chapters and the summary, and the speech
around the times a question concerns as lines for the model's prompt, within a small token budget:

    Heard around 0:05-0:08: Please send the report before Friday.

An answer's sources say which of its evidence was seen (the frames the model looked at) and which was heard (the
speech given with the question; `mark_sources`).

Everything here reads a transcript by its shape (core.speech.types.Transcript: `segments` with `start`, `end`,
`text`, `words`; `engine`), so no analysis needs the speech engines; with no transcript nothing is added anywhere.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from core.events import Event

SPEECH_KIND = "speech"
HEARD_TOKENS = 300
"""Tokens of speech at most put into a question's prompt (a few dozen short sentences)."""
REFINE_HEARD_TOKENS = 80
"""Tokens of speech at most beside a refine look at one moment."""
CAPTION_HEARD_TOKENS = 400
"""Tokens of speech at most beside one chunk's frames when captioning."""
HEARD_PAD_S = 2.0
"""Seconds either side of a window whose speech is still given (a sentence that starts just before it)."""
HEARD_HEADER = "What is said in the video{where} (transcribed from its sound; the transcript may have mistakes):"
ASK_EVIDENCE = "Say whether what you tell was seen in the frames or heard in the speech."
BLOCK_S = 60.0
"""Stretches of speech for chapters and the summary: consecutive segments joined up to this many seconds."""
BLOCK_WORDS = 90


def mmss(seconds: float) -> str:
    """m:ss (h:mm:ss past an hour), whole seconds rounded down: 65.7 -> '1:05'."""
    whole = int(max(0.0, float(seconds)))
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def estimate_tokens(text: str) -> int:
    """About how many tokens `text` is for a Qwen tokenizer: a token per 4 bytes of UTF-8 (a CJK character is 3
    bytes, so about one token each), at least 1."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 4))


def _segments(transcript: Any) -> list[Any]:
    return [s for s in (getattr(transcript, "segments", None) or ()) if str(getattr(s, "text", "")).strip()]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ------------------------------------------------------------------------------------------ events
def speech_events(transcript: Any) -> list[Event]:
    """One `speech` event per segment of `transcript` (its text as the label; the number of words and the engine in
    `detail`), in time order; empty for None."""
    if transcript is None:
        return []
    engine = str(getattr(transcript, "engine", "") or "")
    return [Event(kind=SPEECH_KIND, start=float(s.start), end=float(s.end), label=_one_line(s.text),
                  detail={"words": len(getattr(s, "words", ()) or ()) or len(_one_line(s.text).split()),
                          "engine": engine}, source=f"speech.{engine}" if engine else "speech")
            for s in _segments(transcript)]


def speech_blocks(transcript: Any, span_s: float = BLOCK_S, max_words: int = BLOCK_WORDS) -> list[Event]:
    """The speech as fewer, longer `speech` events for chapters and the summary: consecutive segments joined while
    the stretch stays within `span_s` seconds, each block's text cut to its first `max_words` words (an hour of
    talk is then about 60 lines, not a thousand)."""
    blocks: list[Event] = []
    texts: list[str] = []
    start = end = 0.0
    for s in _segments(transcript):
        if texts and s.end - start > span_s:
            blocks.append(_block(start, end, texts, max_words))
            texts = []
        if not texts:
            start = float(s.start)
        texts.append(_one_line(s.text))
        end = float(s.end)
    if texts:
        blocks.append(_block(start, end, texts, max_words))
    return blocks


def _block(start: float, end: float, texts: list[str], max_words: int) -> Event:
    words = " ".join(texts).split()
    label = " ".join(words[:max_words]) + (" …" if len(words) > max_words else "")
    return Event(kind=SPEECH_KIND, start=start, end=end, label=label, detail={"segments": len(texts)},
                 source="speech")


# ------------------------------------------------------------------------------------------ for prompts
@dataclass
class Heard:
    """The speech put into one prompt: `lines` ("Heard around m:ss-m:ss: ..."), the segments they are (start, end,
    text), and how many segments of the windows were left out for the budget."""

    lines: list[str] = field(default_factory=list)
    segments: list[tuple[float, float, str]] = field(default_factory=list)
    left_out: int = 0
    tokens: int = 0
    where: str = ""
    """Where in the video the lines come from, in the header's words (" around those times"; "": anywhere)."""

    def __bool__(self) -> bool:
        return bool(self.lines)

    def block(self) -> str:
        """The lines under their header (empty when nothing was heard there)."""
        return (HEARD_HEADER.format(where=self.where) + "\n" + "\n".join(self.lines)) if self.lines else ""

    def prompt(self, text: str, ask_evidence: bool = False) -> str:
        """`text` (a question, a caption request) with the speech before it (and, with `ask_evidence`, the request
        to say whether what the answer tells was seen or heard); `text` itself when no speech is given."""
        if not self.lines:
            return text
        return f"{self.block()}\n\n{text}" + (f"\n{ASK_EVIDENCE}" if ask_evidence else "")

    def digest(self) -> str | None:
        """A short hash of what was given (part of a cache key where speech changes a result); None when none."""
        if not self.lines:
            return None
        return hashlib.sha256("\n".join(self.lines).encode("utf-8")).hexdigest()[:16]

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-able: [{"start", "end", "text"}]."""
        return [{"start": round(a, 3), "end": round(b, 3), "text": t} for a, b, t in self.segments]


def heard_line(start: float, end: float, text: str) -> str:
    """'Heard around 0:05-0:08: text' (one line)."""
    return f"Heard around {mmss(start)}-{mmss(end)}: {_one_line(text)}"


_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset("""a an and are as at be been but by can could did do does for from had has have he her his how
i if in into is it its me my no not of on or our say said says she so than that the their them then there these they
this to us was we were what when where which who why will with would you your about video does tell talk talks
speaker speakers""".split())


def content_words(text: str) -> set[str]:
    """The words of `text` that carry meaning (case folded, 3 letters or more, common words left out)."""
    return {w for w in (m.group().casefold() for m in _WORD.finditer(str(text))) if len(w) >= 3 and w not in STOPWORDS}


def heard_context(transcript: Any, windows: Sequence[tuple[float, float]] | None = None, *, question: str = "",
                  focus: float | None = None, budget_tokens: int = HEARD_TOKENS, pad_s: float = HEARD_PAD_S,
                  count: Callable[[str], int] | None = None, where: str | None = None) -> Heard:
    """The speech a prompt should carry, as `Heard` lines in time order, within `budget_tokens`.

    With `windows` (the stretches a question names, or a chunk being captioned): the segments overlapping them
    (widened by `pad_s`), nearest `focus` first (a moment a question names; else in time order) while they fit.
    Without: the whole transcript when it fits, else the segments sharing the most words with `question` first, then
    segments spread evenly over the video. Nothing (an empty Heard) without a transcript. `where`: the header's
    words for the stretch (default " around those times" with windows, "" without).
    """
    segments = _segments(transcript)
    if not segments or budget_tokens <= 0:
        return Heard()
    count = count or estimate_tokens
    if windows:
        chosen: list[Any] = []
        picked: set[int] = set()
        for lo, hi in windows:
            lo, hi = min(lo, hi) - max(0.0, pad_s), max(lo, hi) + max(0.0, pad_s)
            for n, s in enumerate(segments):
                if s.end >= lo and s.start <= hi and n not in picked:
                    picked.add(n)
                    chosen.append(s)
        if focus is not None:
            order = sorted(chosen, key=lambda s: (0.0 if s.start <= focus <= s.end else
                                                  min(abs(s.start - focus), abs(s.end - focus)), s.start))
        else:
            order = sorted(chosen, key=lambda s: s.start)
    else:
        chosen = segments
        order = _by_relevance(segments, question, budget_tokens, count)
    heard = Heard(where=where if where is not None else (" around those times" if windows else ""))
    taken: list[Any] = []
    for s in order:
        line = heard_line(s.start, s.end, s.text)
        cost = count(line) + 1
        if heard.tokens + cost > budget_tokens:
            continue
        heard.tokens += cost
        taken.append(s)
    taken.sort(key=lambda s: (s.start, s.end))
    heard.lines = [heard_line(s.start, s.end, s.text) for s in taken]
    heard.segments = [(float(s.start), float(s.end), _one_line(s.text)) for s in taken]
    heard.left_out = len(chosen) - len(taken)
    return heard


def _by_relevance(segments: list[Any], question: str, budget_tokens: int, count: Callable[[str], int]) -> list[Any]:
    """The order segments are offered to the budget for a question naming no time: all of them when they fit;
    else those sharing words with the question (most first), then an even spread over the video."""
    total = sum(count(heard_line(s.start, s.end, s.text)) + 1 for s in segments)
    if total <= budget_tokens:
        return list(segments)
    wanted = content_words(question)
    scored = sorted(((len(wanted & content_words(s.text)), n) for n, s in enumerate(segments)), key=lambda x: -x[0])
    first = [n for score, n in scored if score > 0]
    rest = [n for n in range(len(segments)) if n not in set(first)]
    spread: list[int] = []
    if rest:  # evenly over the video: halve the stride until every segment is offered
        stride = len(rest)
        seen: set[int] = set()
        while stride >= 1 and len(spread) < len(rest):
            for k in range(0, len(rest), stride):
                if k not in seen:
                    seen.add(k)
                    spread.append(rest[k])
            stride //= 2
    return [segments[n] for n in first + spread]


# ------------------------------------------------------------------------------------------ sources
SEEN, HEARD = "seen", "heard"


def frame_source(times: Iterable[float]) -> dict[str, Any] | None:
    """The frames a model looked at as one 'seen' source, or None when there were none."""
    ts = sorted(float(t) for t in times)
    if not ts:
        return None
    return {"evidence": SEEN, "what": "frames", "start": round(ts[0], 3), "end": round(ts[-1], 3),
            "count": len(ts), "text": f"{len(ts)} frames from {mmss(ts[0])} to {mmss(ts[-1])}", "used": True}


def mark_sources(answer: str, heard: Heard, frames: dict[str, Any] | None,
                 events: Sequence[Event] = ()) -> list[dict[str, Any]]:
    """The answer's sources: the frames (seen) and each stretch of speech given with the question (heard), a heard
    one `used` when the answer repeats at least two of its words (one, for a stretch of a single meaningful word);
    each time the answer names (`events`) is marked `evidence` "heard" when it falls in a used stretch, else
    "seen"."""
    sources: list[dict[str, Any]] = [frames] if frames else []
    said = content_words(answer)
    for start, end, text in heard.segments:
        words = content_words(text)
        need = 1 if len(words) == 1 else 2
        used = len(said & words) >= need if words else False
        sources.append({"evidence": HEARD, "what": "speech", "start": round(start, 3), "end": round(end, 3),
                        "text": text, "used": used})
    used_heard = [s for s in sources if s["evidence"] == HEARD and s["used"]]
    for e in events:
        inside = any(s["start"] - 1.0 <= e.start <= s["end"] + 1.0 for s in used_heard)
        e.detail["evidence"] = HEARD if inside else SEEN
    return sources


def evidence_words(sources: Sequence[dict[str, Any]]) -> str:
    """'seen', 'heard' or 'seen and heard': what an answer's evidence was (its used sources); '' when none."""
    kinds = {s.get("evidence") for s in sources if s.get("used")}
    if kinds == {SEEN, HEARD}:
        return "seen and heard"
    return next(iter(kinds)) if len(kinds) == 1 else ""


__all__ = ["ASK_EVIDENCE", "CAPTION_HEARD_TOKENS", "HEARD", "HEARD_TOKENS", "Heard", "SEEN", "SPEECH_KIND",
           "content_words", "estimate_tokens", "evidence_words", "frame_source", "heard_context", "heard_line", "mark_sources", "mmss",
           "speech_blocks", "speech_events"]
