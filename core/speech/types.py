"""What a transcript is: words and segments with their times in seconds of the file, and the `Transcript` that
every front end, export and analysis reads (JSON-safe both ways, never pickled)."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable

TRANSCRIPT_FORMAT = 1
"""Bumped when the JSON shape of a Transcript changes (older cached transcripts then miss)."""


def _time(value: Any, name: str) -> float:
    out = float(value)
    if not math.isfinite(out) or out < 0:
        raise ValueError(f"{name} must be a finite time of at least 0 seconds, not {value!r}")
    return out


@dataclass(frozen=True)
class Word:
    """One word heard between `start` and `end` seconds; `probability` 0..1 when the engine gives one."""

    start: float
    end: float
    text: str
    probability: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _time(self.start, "start"))
        object.__setattr__(self, "end", max(self.start, _time(self.end, "end")))
        object.__setattr__(self, "text", str(self.text))
        if self.probability is not None:
            p = float(self.probability)
            object.__setattr__(self, "probability", min(1.0, max(0.0, p)) if math.isfinite(p) else None)

    @property
    def center(self) -> float:
        """The middle of the word, in seconds."""
        return (self.start + self.end) / 2

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (times rounded to milliseconds)."""
        out: dict[str, Any] = {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text}
        if self.probability is not None:
            out["probability"] = round(self.probability, 4)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Word":
        """The Word of `to_dict`."""
        return cls(data["start"], data["end"], data["text"], data.get("probability"))


@dataclass(frozen=True)
class Segment:
    """A stretch of speech (about a sentence) between `start` and `end` seconds, its text and its words."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _time(self.start, "start"))
        object.__setattr__(self, "end", max(self.start, _time(self.end, "end")))
        object.__setattr__(self, "text", str(self.text).strip())
        object.__setattr__(self, "words", tuple(self.words))

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start

    @property
    def center(self) -> float:
        """The middle of the segment, in seconds."""
        return (self.start + self.end) / 2

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text,
                "words": [w.to_dict() for w in self.words]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Segment":
        """The Segment of `to_dict`."""
        return cls(data["start"], data["end"], data.get("text", ""),
                   tuple(Word.from_dict(w) for w in data.get("words", ()) or ()))


@dataclass(frozen=True)
class Transcript:
    """What was said in a file: segments in time order, the language (ISO code, e.g. "en"; None when unknown),
    which engine and model heard it, and how long the file is.

    complete: False while some stretches are still to be transcribed (a transcript read back from the cache
    during a run, or after a cancelled one). input_hash: the file's content hash. speech_s: seconds of speech the
    voice detector found (the rest was skipped as silence). language_probability: the engine's confidence in the
    language (None when it does not detect one). chunks, chunks_done: stretches planned and transcribed.
    warnings: plain sentences about what went wrong or was left out.
    """

    segments: tuple[Segment, ...]
    language: str | None
    engine: str
    model: str | None
    duration_s: float
    complete: bool = True
    input_hash: str | None = None
    speech_s: float | None = None
    language_probability: float | None = None
    chunks: int = 0
    chunks_done: int = 0
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(sorted(self.segments, key=lambda s: (s.start, s.end))))
        object.__setattr__(self, "duration_s", _time(self.duration_s, "duration_s"))
        object.__setattr__(self, "warnings", tuple(self.warnings))

    # -- reading
    def text(self) -> str:
        """The whole transcript as plain text: one segment a line."""
        return "\n".join(s.text for s in self.segments if s.text)

    @property
    def words(self) -> tuple[Word, ...]:
        """Every word of every segment, in time order."""
        return tuple(w for s in self.segments for w in s.words)

    def around(self, t0: float, t1: float, pad_s: float = 0.0) -> list[Segment]:
        """The segments heard between `t0` and `t1` seconds (widened by `pad_s` either side), in time order:
        every segment that overlaps the stretch, or touches it when the stretch is a moment."""
        lo, hi = min(t0, t1) - max(0.0, pad_s), max(t0, t1) + max(0.0, pad_s)
        return [s for s in self.segments if s.end >= lo and s.start <= hi]

    def search(self, query: str) -> list[Segment]:
        """The segments whose text holds `query`, ignoring case, width (full-width letters) and spacing (so
        Chinese or Japanese text matches with or without spaces between characters). Empty query: none."""
        needle = _fold(query)
        if not needle:
            return []
        bare = _bare(needle)
        found = []
        for s in self.segments:
            hay = _fold(s.text)
            if needle in hay or (bare and bare in _bare(hay)):
                found.append(s)
        return found

    def at(self, t: float) -> Segment | None:
        """The segment being spoken at `t` seconds (the transcript beside a player), None in a pause."""
        for s in self.segments:
            if s.start <= t <= s.end:
                return s
        return None

    def to_events(self) -> list[Any]:
        """The segments as `core.events.Event`s of kind "speech" (the timeline's speech lane): label the text (cut
        at 80 characters), detail the whole text and the number of words, source "speech.<engine>"."""
        from core.events import Event

        return [Event("speech", s.start, s.end, label=s.text if len(s.text) <= 80 else s.text[:79] + "…",
                      detail={"text": s.text, "words": len(s.words), "language": self.language},
                      source=f"speech.{self.engine}") for s in self.segments if s.text]

    # -- JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return {
            "format": TRANSCRIPT_FORMAT, "segments": [s.to_dict() for s in self.segments], "language": self.language,
            "engine": self.engine, "model": self.model, "duration_s": round(self.duration_s, 3),
            "complete": self.complete, "input_hash": self.input_hash,
            "speech_s": None if self.speech_s is None else round(self.speech_s, 3),
            "language_probability": None if self.language_probability is None else round(self.language_probability, 4),
            "chunks": self.chunks, "chunks_done": self.chunks_done, "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Transcript":
        """The Transcript of `to_dict` (ValueError / KeyError / TypeError for something else)."""
        if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
            raise ValueError("not a transcript")
        if int(data.get("format", TRANSCRIPT_FORMAT)) != TRANSCRIPT_FORMAT:
            raise ValueError(f"transcript format {data.get('format')} is not {TRANSCRIPT_FORMAT}")
        return cls(
            segments=tuple(Segment.from_dict(s) for s in data["segments"]), language=data.get("language"),
            engine=str(data["engine"]), model=data.get("model"), duration_s=data.get("duration_s", 0.0),
            complete=bool(data.get("complete", True)), input_hash=data.get("input_hash"),
            speech_s=data.get("speech_s"), language_probability=data.get("language_probability"),
            chunks=int(data.get("chunks", 0)), chunks_done=int(data.get("chunks_done", 0)),
            warnings=tuple(str(w) for w in data.get("warnings", ()) or ()),
        )


# ------------------------------------------------------------------------------------ text helpers
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]")
_SPACES = re.compile(r"\s+")


def is_cjk(text: str) -> bool:
    """True when `text` holds Chinese, Japanese or Korean characters (written without spaces between words)."""
    return bool(_CJK.search(text))


def _fold(text: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", str(text)).casefold()).strip()


def _bare(text: str) -> str:
    return _SPACES.sub("", text)


def join_words(words: Iterable[str]) -> str:
    """Words as running text: spaces between words, none between CJK characters, none before punctuation."""
    out = ""
    for w in words:
        w = str(w).strip()
        if not w:
            continue
        if not out:
            out = w
        elif (is_cjk(out[-1]) and is_cjk(w[0])) or (unicodedata.category(w[0]).startswith("P")
                                                     and w[0] not in "([{¿¡\"'"):
            out += w
        else:
            out += " " + w
    return out
