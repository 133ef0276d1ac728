"""Long sound in chunks: the speech stretches found by the voice detector are packed into chunks of at most
`chunk_s` seconds, cut in the silences between them (long silences are skipped: no chunk covers them). A stretch of
speech longer than a chunk is cut into windows that overlap by `overlap_s`; where two windows overlap, each word is
kept from the window whose half of the overlap holds its middle, so no word is heard twice or lost.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from core.speech.types import Segment, join_words


@dataclass(frozen=True)
class ChunkOptions:
    """How speech is cut into chunks. chunk_s: the longest chunk (Whisper hears 30 s at a time); overlap_s: overlap
    of the windows a long stretch of speech is cut into; max_gap_s: a silence longer than this ends a chunk (and is
    skipped)."""

    chunk_s: float = 30.0
    overlap_s: float = 2.0
    max_gap_s: float = 2.0

    def __post_init__(self) -> None:
        if not (self.chunk_s > 0 and 0 <= self.overlap_s < self.chunk_s / 2 and self.max_gap_s >= 0):
            raise ValueError("chunk_s must be positive and overlap_s less than half of it")

    def to_dict(self) -> dict[str, float]:
        """A JSON-able dict (part of cache keys)."""
        return asdict(self)


@dataclass(frozen=True)
class Chunk:
    """One piece of sound to transcribe: [start, end] seconds of the file, the speech stretches inside it, and
    whether it overlaps the chunk before it (a window of a long stretch of speech)."""

    index: int
    start: float
    end: float
    regions: tuple[tuple[float, float], ...] = ()
    overlaps_previous: bool = False

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {"index": self.index, "start": round(self.start, 3), "end": round(self.end, 3),
                "regions": [[round(a, 3), round(b, 3)] for a, b in self.regions],
                "overlaps_previous": self.overlaps_previous}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Chunk":
        """The Chunk of `to_dict`."""
        return cls(int(data["index"]), float(data["start"]), float(data["end"]),
                   tuple((float(a), float(b)) for a, b in data.get("regions", ())),
                   bool(data.get("overlaps_previous", False)))


def plan_chunks(regions: Iterable[tuple[float, float]], options: ChunkOptions = ChunkOptions()) -> list[Chunk]:
    """The chunks that cover every speech stretch in `regions` ((start, end) seconds, in time order)."""
    groups: list[list[tuple[float, float]]] = []
    for start, end in regions:
        start, end = round(float(start), 3), round(float(end), 3)
        if end <= start:
            continue
        if groups:
            g = groups[-1]
            if start - g[-1][1] <= options.max_gap_s and end - g[0][0] <= options.chunk_s:
                g.append((start, end))
                continue
        groups.append([(start, end)])
    chunks: list[Chunk] = []
    for g in groups:
        start, end = g[0][0], g[-1][1]
        if end - start <= options.chunk_s + 1e-6:
            chunks.append(Chunk(len(chunks), start, end, tuple(g)))
            continue
        # one stretch of speech longer than a chunk: equal windows, each overlapping the one before
        step_len = options.chunk_s - options.overlap_s
        n = max(2, math.ceil((end - start - options.overlap_s) / step_len))
        length = (end - start + (n - 1) * options.overlap_s) / n
        for i in range(n):
            w0 = round(start + i * (length - options.overlap_s), 3)  # milliseconds: the stored plan is the same
            w1 = end if i == n - 1 else round(w0 + length, 3)
            inside = tuple((round(max(a, w0), 3), round(min(b, w1), 3)) for a, b in g if b > w0 and a < w1)
            chunks.append(Chunk(len(chunks), w0, w1, inside, overlaps_previous=i > 0))
    return chunks


def _trim(segment: Segment, keep_from: float | None, keep_to: float | None) -> Segment | None:
    """`segment` with only the words whose middle lies in [keep_from, keep_to) (a segment without words: kept
    when its middle is there); None when nothing is left."""
    def inside(t: float) -> bool:
        return (keep_from is None or t >= keep_from) and (keep_to is None or t < keep_to)

    if not segment.words:
        return segment if inside(segment.center) else None
    words = tuple(w for w in segment.words if inside(w.center))
    if not words:
        return None
    if len(words) == len(segment.words):
        return segment
    return Segment(words[0].start, max(w.end for w in words), join_words(w.text for w in words), words)


def merge_chunks(chunks: Sequence[Chunk], results: Sequence[Sequence[Segment]]) -> list[Segment]:
    """The segments of every chunk as one time-ordered list: in the overlap of two windows each word is kept from
    one of them only (cut at the middle of the overlap); times made monotone (no segment starts before the one
    before it)."""
    cuts: list[tuple[float | None, float | None]] = []
    for i, chunk in enumerate(chunks):
        lo = None
        hi = None
        if chunk.overlaps_previous and i > 0:
            lo = (chunk.start + chunks[i - 1].end) / 2
        if i + 1 < len(chunks) and chunks[i + 1].overlaps_previous:
            hi = (chunks[i + 1].start + chunk.end) / 2
        cuts.append((lo, hi))
    merged: list[Segment] = []
    for (lo, hi), segments in zip(cuts, results):
        for seg in sorted(segments, key=lambda s: (s.start, s.end)):
            kept = _trim(seg, lo, hi)
            if kept is not None and (kept.text or kept.words):
                merged.append(kept)
    merged.sort(key=lambda s: (s.start, s.end))
    return monotone(merged)


def monotone(segments: Sequence[Segment]) -> list[Segment]:
    """Segments whose times never go back: each starts at or after the start of the one before, its words in
    order within it."""
    out: list[Segment] = []
    last = 0.0
    for seg in segments:
        start = max(seg.start, last)
        words = []
        t = start
        for w in seg.words:
            ws = max(w.start, t)
            we = max(w.end, ws)
            words.append(type(w)(ws, we, w.text, w.probability))
            t = ws
        end = max(seg.end, start, words[-1].end if words else start)
        out.append(Segment(start, end, seg.text, tuple(words)))
        last = start
    return out
