"""The bottom of the house: the one `Event` every analysis produces (scenes, motion, on-screen text,
model answers...), the one progress callback shape and the one cancel token of every long call.

    def long_call(..., progress: Progress | None = None, cancel: CancelToken | None = None):
        report(progress, 0.5, "half way", "scenes")   # fraction of this call, plain words, stage name
        raise_if_cancelled(cancel)                      # Cancelled when the token is set
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from core.errors import Cancelled

# The cancel token of every long call: set it (from any thread) to stop the call with Cancelled.
CancelToken = threading.Event


class Progress(Protocol):
    """The progress callback of every long call: `progress(fraction, message, stage)`.

    fraction: 0..1 of the call's work; message: what is happening, in plain words; stage: which part
    of the work (e.g. "scenes"), "" when the call has one part.
    """

    def __call__(self, fraction: float, message: str = "", stage: str = "") -> None: ...


def report(progress: Progress | None, fraction: float, message: str = "", stage: str = "") -> None:
    """Call `progress` if there is one, with the fraction kept within 0..1."""
    if progress is not None:
        progress(max(0.0, min(1.0, float(fraction))), message, stage)


def raise_if_cancelled(cancel: CancelToken | None) -> None:
    """Raise Cancelled when `cancel` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")

EVENT_KINDS = ("scene", "fade", "motion", "static", "text", "vlm", "caption", "chapter", "answer")


@dataclass
class Event:
    """Something that happens in a video between `start` and `end` seconds.

    kind: what found it ("scene", "fade", "motion", "static", "text", "vlm", "answer", ...).
    label: a short human-readable title (e.g. the text read, "shot 2", "activity").
    detail: free JSON-able data for the kind (e.g. {"peak": 12.3} or {"transition_in": "fade"}).
    confidence: 0..1 where it means something (OCR score, detector strength), else None.
    source: the component and version that produced it (e.g. "media.scenes").
    thumbnail: a reference to a stored thumbnail (a cache key string) or None.
    """

    kind: str
    start: float
    end: float
    label: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    confidence: float | None = None
    source: str = ""
    thumbnail: str | None = None

    def __post_init__(self) -> None:
        if not self.kind:
            raise ValueError("an Event needs a kind (e.g. 'scene', 'text')")
        self.start = float(self.start)
        self.end = float(self.end)
        if self.end < self.start:
            raise ValueError(f"an Event ends ({self.end}) before it starts ({self.start})")
        if self.confidence is not None:
            self.confidence = float(self.confidence)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        """The Event stored by `to_dict` (unknown keys are ignored)."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> str:
        """The Event as a JSON string."""
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Event":
        """The Event of a JSON string made by `to_json`."""
        return cls.from_dict(json.loads(text))


def events_to_json(events: list[Event]) -> list[dict[str, Any]]:
    """A JSON-able list of events."""
    return [e.to_dict() for e in events]


def events_from_json(data: list[dict[str, Any]]) -> list[Event]:
    """Events from `events_to_json` output."""
    return [Event.from_dict(d) for d in data]


def sort_events(events: list[Event]) -> list[Event]:
    """Events in time order (start, then end, then kind)."""
    return sorted(events, key=lambda e: (e.start, e.end, e.kind))
