"""Motion: a motion-per-second curve from differences of small grey frames, activity events
(start, end, peak) with a sensitivity setting, and static stretches (near-identical frames, which
the sampler can thin out with `thin_static`).

Motion of a frame = percent of its pixels whose grey level changed by more than `pixel_delta`
since the previous frame (robust to compression noise, independent of contrast).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.events import Event


@dataclass
class MotionParams:
    """sensitivity: 0..1, higher finds weaker motion (threshold = 0.05 + 1.5 x (1 - sensitivity) percent).
    pixel_delta: grey-level change that counts as a changed pixel. smooth: seconds of the moving average.
    min_event/merge_gap: shortest activity event and largest quiet gap merged into one event (s).
    static_level: motion percent under which a frame is static; min_static: shortest static stretch (s).
    """

    sensitivity: float = 0.6
    pixel_delta: int = 16
    smooth: float = 0.3
    min_event: float = 0.4
    merge_gap: float = 0.5
    static_level: float = 0.05
    min_static: float = 1.5

    @property
    def threshold(self) -> float:
        """Motion percent above which a frame is active."""
        s = min(1.0, max(0.0, self.sensitivity))
        return 0.05 + 1.5 * (1.0 - s)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)


@dataclass
class MotionResult:
    """Per-second motion curve (percent of pixels changing, mean per second), activity and static stretches."""

    seconds: list[float]
    curve: list[float]
    activity: list[dict[str, float]]
    static: list[dict[str, float]]
    threshold: float
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MotionResult":
        """The MotionResult stored by `to_dict`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def events(self) -> list[Event]:
        """Motion events (kind "motion", detail peak time/value) and static events (kind "static")."""
        out = [Event("motion", a["start"], a["end"], "activity", {"peak": a["peak"], "peak_time": a["peak_time"],
                     "mean": a["mean"]}, confidence=min(1.0, a["peak"] / (4 * self.threshold)), source="media.motion")
               for a in self.activity]
        out += [Event("static", s["start"], s["end"], "static", {}, source="media.motion") for s in self.static]
        return out


class MotionDetector:
    """Streaming motion measure: feed `process(index, time, grey)` in order, then `finish()`."""

    def __init__(self, fps: float, params: MotionParams | None = None) -> None:
        self.fps = fps
        self.params = params or MotionParams()
        self.times: list[float] = []
        self.values: list[float] = []
        self._prev: np.ndarray | None = None
        self.ignore: set[int] = set()

    def process(self, index: int, time: float, grey: np.ndarray) -> float:
        """Take one small greyscale frame; returns its motion percent."""
        cur = grey.astype(np.int16)
        value = 0.0 if self._prev is None else float((np.abs(cur - self._prev) > self.params.pixel_delta).mean() * 100)
        self._prev = cur
        self.times.append(time)
        self.values.append(value)
        return value

    def finish(self, cut_times: list[float] | None = None, end_time: float | None = None) -> MotionResult:
        """The curve and events; frames at `cut_times` (scene cuts, fades) are not counted as motion."""
        p = self.params
        n = len(self.times)
        thr = p.threshold
        if n == 0:
            return MotionResult([], [], [], [], thr, p.to_dict())
        fps = self.fps
        t = np.asarray(self.times)
        v = np.asarray(self.values)
        for c in cut_times or []:
            near = np.abs(t - c) <= 1.0 / fps + 1e-6
            v[near] = 0.0
        end = end_time if end_time is not None else float(t[-1] + 1.0 / fps)
        k = max(1, int(round(p.smooth * fps)))
        sm = np.convolve(v, np.ones(k) / k, mode="same") if k > 1 else v

        seconds = np.arange(0, int(np.ceil(end)))
        curve = [float(v[(t >= s) & (t < s + 1)].mean()) if ((t >= s) & (t < s + 1)).any() else 0.0 for s in seconds]

        activity = []
        for a, b in _runs(sm > thr, t, fps, p.merge_gap, p.min_event):
            sel = (t >= a) & (t < b)
            j = int(np.argmax(np.where(sel, v, -1)))
            activity.append({"start": round(a, 4), "end": round(b, 4), "peak": float(v[j]), "peak_time": float(t[j]),
                             "mean": float(v[sel].mean())})
        static = [{"start": round(a, 4), "end": round(b, 4)}
                  for a, b in _runs(sm <= p.static_level, t, fps, 0.0, p.min_static)]
        return MotionResult([float(s) for s in seconds], curve, activity, static, thr, p.to_dict())


def _runs(mask: np.ndarray, t: np.ndarray, fps: float, merge_gap: float, min_len: float) -> list[tuple[float, float]]:
    """[start, end) times of runs of True in `mask`, gaps under `merge_gap` s merged, runs under `min_len` s dropped."""
    runs: list[list[float]] = []
    i, n = 0, len(mask)
    while i < n:
        if mask[i]:
            j = i
            while j + 1 < n and mask[j + 1]:
                j += 1
            a, b = float(t[i]), float(t[j] + 1.0 / fps)
            if runs and a - runs[-1][1] <= merge_gap:
                runs[-1][1] = b
            else:
                runs.append([a, b])
            i = j + 1
        else:
            i += 1
    return [(a, b) for a, b in runs if b - a >= min_len - 1e-9]


def thin_static(indices: list[int], fps: float, static: list[dict[str, float]], keep_every: float = 2.0) -> list[int]:
    """Frame numbers with samples inside static stretches thinned to one per `keep_every` seconds."""
    out: list[int] = []
    last_kept: dict[int, float] = {}
    for i in indices:
        t = i / fps
        k = next((n for n, s in enumerate(static) if s["start"] <= t < s["end"]), None)
        if k is None:
            out.append(i)
            continue
        if k not in last_kept or t - last_kept[k] >= keep_every:
            out.append(i)
            last_kept[k] = t
    return out
