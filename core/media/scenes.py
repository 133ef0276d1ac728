"""Scene cuts: a content detector with an adaptive threshold (a cut is a frame that differs from the
previous one far more than its neighbours differ from theirs), plus black-frame analysis so fades
to and from black become one boundary in the middle of the black gap, marked as a fade.

It consumes small greyscale frames one at a time (`process`), keeping three numbers per frame,
so memory stays small on long videos; `finish` returns the shots and fades.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.events import Event


@dataclass
class SceneParams:
    """Detector settings.

    min_content: smallest mean grey difference (0-255) between frames that can be a cut.
    adaptive_ratio: how many times larger than its neighbours' differences a cut's difference must be.
    window: neighbour frames on each side used for the adaptive threshold.
    black_level: mean grey level (0-255) under which a frame counts as black.
    min_shot: shortest shot in seconds (closer cuts are dropped).
    max_fade: longest fade in seconds looked for around a black gap.
    """

    min_content: float = 12.0
    adaptive_ratio: float = 3.0
    window: int = 2
    black_level: float = 20.0
    min_shot: float = 0.6
    max_fade: float = 3.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)


@dataclass
class Shot:
    """One shot: [start, end) seconds, its first/last frame numbers and how it begins and ends.

    transition_in/out: "start"/"end" (of the video), "cut" or "fade" (through black).
    content_start/content_end: where the picture is not black (fades to black excluded).
    """

    index: int
    start: float
    end: float
    start_frame: int
    end_frame: int
    transition_in: str
    transition_out: str
    content_start: float
    content_end: float
    strength: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)


@dataclass
class Fade:
    """A fade to black ("out") or from black ("in"), or a black gap ("black"), in seconds."""

    kind: str
    start: float
    end: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)


@dataclass
class SceneResult:
    """Shots covering the analysed time, the fades found, and the hard cut times."""

    shots: list[Shot]
    fades: list[Fade]
    cuts: list[float]
    fps: float
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SceneResult":
        """The SceneResult stored by `to_dict`."""
        return cls(shots=[Shot(**s) for s in data["shots"]], fades=[Fade(**f) for f in data["fades"]],
                   cuts=list(data["cuts"]), fps=data["fps"], params=data.get("params", {}))

    def events(self) -> list[Event]:
        """Scene events (one per shot) and fade events."""
        out = [Event("scene", s.start, s.end, f"shot {s.index + 1}",
                     {"transition_in": s.transition_in, "transition_out": s.transition_out,
                      "start_frame": s.start_frame, "end_frame": s.end_frame,
                      "content_start": s.content_start, "content_end": s.content_end},
                     confidence=min(1.0, s.strength), source="media.scenes") for s in self.shots]
        out += [Event("fade", f.start, f.end, {"in": "fade in", "out": "fade out"}.get(f.kind, "black"),
                      {"fade": f.kind}, source="media.scenes") for f in self.fades]
        return out


class SceneDetector:
    """Streaming shot detector: feed `process(index, time, grey)` in order, then call `finish()`."""

    def __init__(self, fps: float, params: SceneParams | None = None) -> None:
        self.fps = fps
        self.params = params or SceneParams()
        self.indices: list[int] = []
        self.times: list[float] = []
        self.luma: list[float] = []
        self.score: list[float] = []
        self._prev: np.ndarray | None = None

    def process(self, index: int, time: float, grey: np.ndarray) -> float:
        """Take one small greyscale frame; returns its difference from the previous frame (0-255)."""
        small = grey.astype(np.int16)
        score = 0.0 if self._prev is None else float(np.abs(small - self._prev).mean())
        self._prev = small
        self.indices.append(index)
        self.times.append(time)
        self.luma.append(float(small.mean()))
        self.score.append(score)
        return score

    def finish(self, end_time: float | None = None) -> SceneResult:
        """The shots and fades of everything processed; `end_time` closes the last shot (default: last frame + 1)."""
        p = self.params
        n = len(self.times)
        fps = self.fps
        if n == 0:
            return SceneResult([], [], [], fps, p.to_dict())
        times = np.asarray(self.times)
        luma = np.asarray(self.luma)
        score = np.asarray(self.score)
        end = end_time if end_time is not None else times[-1] + 1.0 / fps
        black = luma < p.black_level

        # black gaps (runs of black frames)
        gaps: list[tuple[int, int]] = []
        i = 0
        while i < n:
            if black[i]:
                j = i
                while j + 1 < n and black[j + 1]:
                    j += 1
                gaps.append((i, j))
                i = j + 1
            else:
                i += 1

        # frames belonging to a fade: luma falling into / rising out of a gap
        in_fade = np.zeros(n, dtype=bool)
        fades: list[Fade] = []
        max_f = max(1, int(round(p.max_fade * fps)))
        for a, b in gaps:
            in_fade[a:b + 1] = True
            k = a
            while k - 1 >= 0 and a - (k - 1) <= max_f and luma[k - 1] > luma[k] + 0.05 and not black[k - 1]:
                k -= 1
            if a - k >= 2 and luma[k] - luma[a] > p.black_level * 0.5:
                in_fade[k:a] = True
                fades.append(Fade("out", float(times[k]), float(times[a])))
            m = b
            while m + 1 < n and (m + 1) - b <= max_f and luma[m + 1] > luma[m] + 0.05 and not black[m + 1]:
                m += 1
            if m - b >= 2 and luma[m] - luma[b] > p.black_level * 0.5:
                in_fade[b + 1:m + 1] = True
                fades.append(Fade("in", float(times[b] + 1.0 / fps), float(times[m])))
            fades.append(Fade("black", float(times[a]), float(times[b] + 1.0 / fps)))

        # hard cuts: adaptive threshold on the frame difference
        cuts: list[tuple[int, float]] = []
        w = max(1, p.window)
        for i in range(1, n):
            if score[i] < p.min_content or in_fade[i] or in_fade[i - 1]:
                continue
            lo, hi = max(1, i - w), min(n, i + w + 1)
            neigh = np.concatenate([score[lo:i], score[i + 1:hi]])
            base = float(neigh.mean()) if neigh.size else 0.0
            ratio = score[i] / max(base, 1.0)
            if ratio >= p.adaptive_ratio and score[i] >= neigh.max(initial=0.0):
                cuts.append((i, float(ratio)))
        kept: list[tuple[int, float]] = []
        min_len = p.min_shot * fps
        for i, r in cuts:
            if kept and i - kept[-1][0] < min_len:
                if score[i] > score[kept[-1][0]]:
                    kept[-1] = (i, r)
                continue
            kept.append((i, r))

        # boundaries: hard cuts and the middle of black gaps that have content on both sides
        content = ~black
        bounds: list[tuple[float, str, float]] = [(float(times[i]), "cut", min(1.0, r / (2 * p.adaptive_ratio)))
                                                  for i, r in kept]
        for a, b in gaps:
            if content[:a].any() and content[b + 1:].any():
                mid = (times[a] + times[b] + 1.0 / fps) / 2
                bounds.append((float(mid), "fade", 1.0))
        bounds.sort()
        merged: list[tuple[float, str, float]] = []
        for bnd in bounds:
            if merged and bnd[0] - merged[-1][0] < p.min_shot:
                if bnd[1] == "fade":
                    merged[-1] = bnd
                continue
            merged.append(bnd)

        start0 = float(times[0])
        edges = [(start0, "start", 1.0)] + merged + [(float(end), "end", 1.0)]
        shots: list[Shot] = []
        for k in range(len(edges) - 1):
            s, tin, strength = edges[k]
            e, tout, _ = edges[k + 1]
            if e <= s:
                continue
            sel = (times >= s) & (times < e)
            nonblack = times[sel & content]
            cs = float(nonblack[0]) if nonblack.size else s
            ce = float(nonblack[-1] + 1.0 / fps) if nonblack.size else e
            shots.append(Shot(index=len(shots), start=round(s, 4), end=round(e, 4),
                              start_frame=int(round(s * fps)), end_frame=max(int(round(s * fps)), int(round(e * fps)) - 1),
                              transition_in=tin, transition_out=tout, content_start=round(cs, 4),
                              content_end=round(ce, 4), strength=strength))
        fades.sort(key=lambda f: (f.start, f.kind))
        return SceneResult(shots, fades, [float(times[i]) for i, _ in kept], fps, p.to_dict())
