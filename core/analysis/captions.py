"""Reading what the model says about a stretch of video: timestamped events as JSON, validated.

Model output is untrusted text: fenced or bare JSON, truncated arrays, times as seconds, "mm:ss.ff",
"hh:mm:ss" or "<12.5 seconds>", times outside the chunk, runaway repetition. Everything unusable
becomes a reported problem, never an exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from core.events import Event

CAPTION_PROMPT = (
    "You are watching the part of a video from {start} to {end} (times in seconds, as the <t seconds> "
    "markers show). List the distinct events you see, in order, as a JSON array only, no prose: "
    '[{{"start": <seconds>, "end": <seconds>, "description": "<what happens, one sentence>"}}]. '
    "Use times between {start_s:.1f} and {end_s:.1f}."
)
CAPTION_SPEECH = ("Where what is said matters, describe that too (e.g. \"the speaker explains the budget\"), at the "
                  "time it is said.")
"""Added to a chunk's caption request when the video's transcript gives the speech of that chunk."""

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)
_CLOCK = re.compile(r"^\s*(?:(\d{1,2}):)?(\d{1,3}):(\d{1,2}(?:\.\d+)?)\s*$")
_NUMBER = re.compile(r"^\s*<?\s*(-?\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)?\s*>?\s*$", re.IGNORECASE)
_TEXT_KEYS = ("description", "event", "caption", "text", "label", "title", "summary")


@dataclass
class ParsedEvents:
    """Events read from a model's answer plus what could not be used."""

    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    truncated: bool = False

    @property
    def empty_message(self) -> str:
        """The sentence a user sees when nothing usable came back."""
        return "No events found in the model's answer." + (f" ({self.problems[0]})" if self.problems else "")


def parse_seconds(value: Any) -> float | None:
    """12.5, "12.5", "12.5s", "<12.5 seconds>", "01:02.5", "1:02:03" -> seconds; None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value == value and abs(value) != float("inf") else None
    if not isinstance(value, str):
        return None
    m = _CLOCK.match(value)
    if m:
        h = int(m.group(1)) if m.group(1) else 0
        return h * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    m = _NUMBER.match(value)
    if m:
        return float(m.group(1))
    return None


def _json_candidates(text: str) -> str:
    fenced = _FENCE.findall(text)
    if fenced:
        return max(fenced, key=len)
    return text


def _raw_objects(text: str) -> tuple[list[Any], bool]:
    """Every complete JSON object found in `text` (inside an array or not) and whether it looked cut off."""
    body = _json_candidates(text)
    start = min([i for i in (body.find("["), body.find("{")) if i >= 0], default=-1)
    if start < 0:
        return [], False
    body = body[start:]
    try:
        data = json.loads(body)
        if isinstance(data, dict):
            inner = next((v for v in data.values() if isinstance(v, list)), None)
            return (inner if inner is not None else [data]), False
        if isinstance(data, list):
            return data, False
    except json.JSONDecodeError:
        pass
    # tolerant pass: decode object by object; whatever is cut off at the end is dropped
    decoder = json.JSONDecoder()
    items: list[Any] = []
    i = 0
    truncated = False
    while True:
        j = body.find("{", i)
        if j < 0:
            break
        try:
            obj, end = decoder.raw_decode(body, j)
        except json.JSONDecodeError:
            truncated = True
            i = j + 1
            continue
        if isinstance(obj, dict):
            items.append(obj)
        i = end
    return items, truncated or not body.rstrip().endswith(("]", "}"))


def parse_events(
    text: str,
    window: tuple[float, float] | None = None,
    kind: str = "vlm",
    source: str = "vlm.captions",
    tolerance: float = 1.0,
) -> ParsedEvents:
    """Events in a model answer; those outside `window` (± `tolerance` seconds) are dropped and reported."""
    result = ParsedEvents()
    if not text or not text.strip():
        result.problems.append("the model returned no text")
        return result
    items, result.truncated = _raw_objects(text)
    if result.truncated:
        result.problems.append("the JSON was cut off (token limit?); complete events were kept")
    if not items:
        result.problems.append("the answer holds no JSON events")
        return result
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            result.problems.append(f"item {n + 1} is not an object")
            continue
        start = parse_seconds(item.get("start", item.get("start_time", item.get("time"))))
        end = parse_seconds(item.get("end", item.get("end_time")))
        label = next((str(item[k]).strip() for k in _TEXT_KEYS if k in item and str(item[k]).strip()), "")
        if start is None:
            result.problems.append(f"item {n + 1} has no readable start time")
            continue
        if end is None:
            end = start
        if end < start:
            start, end = end, start
        if not label:
            result.problems.append(f"item {n + 1} has no description")
            continue
        if window is not None:
            lo, hi = window
            if start < lo - tolerance or end > hi + tolerance:
                result.problems.append(
                    f"item {n + 1} ({start:.1f}-{end:.1f} s) lies outside the part of the video shown "
                    f"({lo:.1f}-{hi:.1f} s)"
                )
                continue
            start, end = max(lo, start), min(hi, end)
        result.events.append(Event(kind=kind, start=start, end=end, label=label[:500], source=source,
                                   detail={"raw": {k: item[k] for k in list(item)[:6]}}))
    return result


def is_runaway(text: str, min_repeats: int = 4) -> bool:
    """True when the text ends in a loop (the same unit repeated) or is mostly repeated word n-grams."""
    tail = text[-600:]
    for unit in range(1, 61):
        if len(tail) < unit * min_repeats:
            break
        piece = tail[-unit:]
        if not piece.strip():
            continue
        repeats = max(min_repeats, 40 // unit)
        if len(tail) >= unit * repeats and tail.endswith(piece * repeats):
            return True
    words = text.split()
    if len(words) >= 40:
        grams = [" ".join(words[i:i + 3]) for i in range(len(words) - 2)]
        if len(set(grams)) / len(grams) < 0.3:
            return True
    return False
