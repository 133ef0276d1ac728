"""On-screen text events: OCR on sampled frames that changed (or key frames), the same text on
consecutive samples merged into one event [first seen, last seen].

OCR goes through `ocr_lines`, a small adapter over the process's one RapidOCR object (core.ocr.rapid,
shared with the document OCR engine, so its models load once); `set_ocr_function` replaces it.
"""

from __future__ import annotations

import difflib
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from core.events import Event
from core.media.decode import DecodeReport

OcrFunction = Callable[[np.ndarray], list[tuple[str, float, list[list[float]]]]]
_ocr_override: OcrFunction | None = None


def set_ocr_function(fn: OcrFunction | None) -> None:
    """Use `fn(rgb) -> [(text, score, box)]` for on-screen text instead of RapidOCR (None: back to RapidOCR)."""
    global _ocr_override
    _ocr_override = fn


def ocr_lines(rgb: np.ndarray) -> list[tuple[str, float, list[list[float]]]]:
    """Text lines read in an RGB image: [(text, score 0..1, box as 4 [x, y] points)]."""
    if _ocr_override is not None:
        return _ocr_override(rgb)
    from core.ocr.rapid import run_rapidocr  # the process's one RapidOCR (raises OcrError when it is missing)

    out = run_rapidocr(rgb, det=True, cls=False, rec=True)
    if out is None or out.txts is None:
        return []
    boxes = out.boxes if out.boxes is not None else [[]] * len(out.txts)
    return [(str(t), float(s), np.asarray(b).tolist()) for t, s, b in zip(out.txts, out.scores, boxes)]


@dataclass
class TextParams:
    """fps: samples per second looked at. min_score: OCR confidence kept. change_level: percent of pixels
    that must change (grey delta > 24) since the last OCR'd frame to OCR again. similarity: two readings at
    least this similar (0..1) are the same text. max_side: frames are scaled so their longest side is at most this.
    """

    fps: float = 1.0
    min_score: float = 0.7
    change_level: float = 0.02
    similarity: float = 0.85
    max_side: int = 960

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)


@dataclass
class TextReading:
    """The text lines read at one sampled time (reused from the previous OCR when the frame had not changed)."""

    time: float
    index: int
    lines: list[dict[str, Any]]
    ocr_run: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)


@dataclass
class TextResult:
    """Per-sample readings and merged text events (dicts with start, end, text, score, box)."""

    readings: list[TextReading]
    spans: list[dict[str, Any]]
    ocr_calls: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TextResult":
        """The TextResult stored by `to_dict`."""
        return cls([TextReading(**r) for r in data["readings"]], list(data["spans"]), int(data["ocr_calls"]),
                   data.get("params", {}))

    def events(self) -> list[Event]:
        """One "text" Event per merged span: label = the text, confidence = best OCR score."""
        return [Event("text", s["start"], s["end"], s["text"], {"box": s.get("box"), "samples": s["samples"]},
                      confidence=s["score"], source="media.text") for s in self.spans]


def normalise_text(text: str) -> str:
    """Text with runs of spaces collapsed and ends trimmed."""
    return re.sub(r"\s+", " ", text).strip()


def _grey_small(rgb: np.ndarray) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    scale = 320 / max(h, w)
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1:
        g = cv2.resize(g, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    return g.astype(np.int16)


class TextTracker:
    """Streaming: feed sampled frames in time order to `process`, then `finish()` for the merged events."""

    def __init__(self, params: TextParams | None = None, sample_interval: float | None = None) -> None:
        self.params = params or TextParams()
        self.readings: list[TextReading] = []
        self.ocr_calls = 0
        self._last_grey: np.ndarray | None = None
        self._last_lines: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []
        self._closed: list[dict[str, Any]] = []
        self.sample_interval = sample_interval

    def process(self, time: float, index: int, rgb: np.ndarray, force: bool = False) -> TextReading:
        """Read the frame (or reuse the last reading when it has not changed); returns its TextReading."""
        p = self.params
        grey = _grey_small(rgb)
        changed = True
        if self._last_grey is not None and self._last_grey.shape == grey.shape and not force:
            changed = float((np.abs(grey - self._last_grey) > 24).mean() * 100) > p.change_level
        if changed:
            lines = []
            for text, score, box in ocr_lines(rgb):
                t = normalise_text(text)
                if t and score >= p.min_score and any(c.isalnum() for c in t):
                    lines.append({"text": t, "score": round(score, 4), "box": box})
            self.ocr_calls += 1
            self._last_grey = grey
            self._last_lines = lines
        reading = TextReading(time=float(time), index=int(index), lines=list(self._last_lines), ocr_run=changed)
        self.readings.append(reading)
        self._merge(reading)
        return reading

    def replay(self, reading: TextReading) -> None:
        """Take a reading saved earlier (no OCR is run): it joins the readings and the merged spans."""
        self.readings.append(reading)
        self.ocr_calls += int(reading.ocr_run)
        self._merge(reading)

    def _same(self, a: str, b: str) -> bool:
        return a == b or difflib.SequenceMatcher(None, a, b).ratio() >= self.params.similarity and len(a) > 6

    def _merge(self, reading: TextReading) -> None:
        still_open: list[dict[str, Any]] = []
        unmatched = list(reading.lines)
        for span in self._open:
            match = next((ln for ln in unmatched if self._same(span["text"], ln["text"])), None)
            if match is None:
                self._closed.append(span)
                continue
            unmatched.remove(match)
            span["end"] = reading.time
            span["samples"] += 1
            if match["score"] > span["score"]:
                span.update(score=match["score"], text=match["text"], box=match["box"])
            still_open.append(span)
        for ln in unmatched:
            still_open.append({"start": reading.time, "end": reading.time, "text": ln["text"], "score": ln["score"],
                               "box": ln["box"], "samples": 1})
        self._open = still_open

    def finish(self) -> TextResult:
        """Merged text spans [first seen, last seen] in time order."""
        spans = sorted(self._closed + self._open, key=lambda s: (s["start"], s["text"]))
        self._closed, self._open = spans, []
        return TextResult(self.readings, spans, self.ocr_calls, self.params.to_dict())


def track_text(frames: Iterable[tuple[float, int, np.ndarray]], params: TextParams | None = None) -> TextResult:
    """Text events of (time, frame number, RGB) samples given in time order."""
    tracker = TextTracker(params)
    for t, i, rgb in frames:
        tracker.process(t, i, rgb)
    return tracker.finish()


_TIMECODE = re.compile(r"(\d{1,2})[:;.](\d{2})[:;.](\d{2})(?:[:;.](\d{2}))?")


def parse_timecode(text: str, fps: float) -> float | None:
    """Seconds of a timecode read in `text` ("HH:MM:SS:FF" or "HH:MM:SS"), or None when there is none."""
    m = _TIMECODE.search(text.replace(" ", ""))
    if not m:
        return None
    h, mi, s, f = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + (int(f) / fps if f else 0.0)


def run_text_pass(info: Any, params: TextParams | None = None, progress: Callable[[float, str], None] | None = None,
                  cancel: threading.Event | None = None, start: float | None = None, end: float | None = None,
                  on_reading: Callable[[TextReading], None] | None = None, stall_s: float = 60.0,
                  resume: list[TextReading] | None = None, report: DecodeReport | None = None) -> tuple[TextResult, list[str]]:
    """OCR the probed video at `params.fps` (changed frames only) and return (TextResult, warnings).

    Key frames only are decoded when samples are further apart than key frames. `resume`: readings
    saved by an earlier, unfinished pass; they are replayed (no OCR) and only later samples are read.
    `report` (a DecodeReport) receives the seconds lost to damaged data and whether decoding stopped early.
    """
    from dataclasses import replace

    from core.media.sampling import SamplingPlan, iter_samples, schedule_frames

    p = params or TextParams()
    plan = SamplingPlan(fps=p.fps, min_frames=2, max_frames=1_000_000, start=start, end=end)
    schedule = schedule_frames(info, plan)
    scale = min(1.0, p.max_side / max(info.width, info.height))
    size = (max(2, int(info.width * scale) // 2 * 2), max(2, int(info.height * scale) // 2 * 2))
    warnings: list[str] = list(schedule.warnings)
    tracker = TextTracker(p)
    total = max(1, schedule.frames)
    done = 0
    if resume:
        for r in resume:
            tracker.replay(r)
        last = resume[-1].index
        kept = [(i, t) for i, t in zip(schedule.indices, schedule.times) if i > last]
        done = schedule.frames - len(kept)
        schedule = replace(schedule, indices=[i for i, _ in kept], times=[t for _, t in kept])
    samples = iter_samples(info, schedule, size=size, cancel=cancel, warnings=warnings, stall_s=stall_s,
                           report=report) if schedule.indices else iter(())
    for k, frame in enumerate(samples, start=done):
        reading = tracker.process(frame.time, frame.index, frame.image)
        if on_reading is not None:
            on_reading(reading)
        if progress is not None:
            progress(min(1.0, (k + 1) / total), f"text read up to {frame.time:.1f} s ({tracker.ocr_calls} OCR calls)")
    return tracker.finish(), warnings
