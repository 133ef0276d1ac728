"""Vertical text (tategaki): which pages are vertical, reading order of their columns, and ruby.

A vertical page is read column by column, each top to bottom, columns right to left. Columns form blocks:
the pages of a two-page spread (split at the gutter, right page first), and tiers (dan: bands of columns
split by a blank strip across the page, top tier first). Ruby (furigana: small kana set beside a column to
give the reading of the characters next to it) is taken out of the main text and kept as an annotation of
the column it belongs to, so "吾輩(わがはい)" reads "吾輩", not "わがはい吾輩".

Everything here works on line boxes an engine found; nothing reads pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from core.ocr.scripts import CJK_SCRIPTS, char_script, detect_script
from core.ocr.types import OcrLine


@dataclass
class Ruby:
    """A ruby (furigana) annotation: its text, its box, the main column it belongs to (index into the ordered
    main lines, -1 when none) and the characters of that column it stands beside (`start` to `end`)."""

    text: str
    box: list[list[float]]
    base: int = -1
    confidence: float = 0.0
    start: int = 0
    end: int = 0

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {"text": self.text, "box": self.box, "base": self.base, "confidence": self.confidence,
                "start": self.start, "end": self.end}


@dataclass
class VerticalReading:
    """Main columns in reading order, the ruby taken out of them, and what was decided (for the page's warnings)."""

    lines: list[OcrLine]
    ruby: list[Ruby] = field(default_factory=list)
    blocks: int = 1
    notes: list[str] = field(default_factory=list)


def _median(vals: list[float]) -> float:
    vals = sorted(vals)
    return vals[len(vals) // 2] if vals else 0.0


def _w(ln: OcrLine) -> float:
    b = ln.bounds
    return b[2] - b[0]


def _h(ln: OcrLine) -> float:
    b = ln.bounds
    return b[3] - b[1]


def is_column(ln: OcrLine) -> bool:
    """True for a line that runs top to bottom: flagged vertical by the engine, or taller than wide with more
    than one character."""
    return ln.vertical or (_h(ln) > 1.5 * _w(ln) and len(ln.text.strip()) > 1)


def vertical_share(lines: list[OcrLine]) -> float:
    """The share of the characters read that lie in columns (0 when nothing was read)."""
    total = sum(len(ln.text) for ln in lines)
    return sum(len(ln.text) for ln in lines if is_column(ln)) / total if total else 0.0


def looks_vertical(lines: list[OcrLine]) -> bool:
    """True when the reading is vertical CJK text: most characters lie in columns and the text is CJK."""
    text = "".join(ln.text for ln in lines)
    return bool(lines) and vertical_share(lines) > 0.6 and detect_script(text) in CJK_SCRIPTS


def _kana_share(text: str) -> float:
    chars = [ch for ch in text if not ch.isspace()]
    return sum(1 for ch in chars if char_script(ch) == "Japanese") / len(chars) if chars else 0.0


def _pitch(ln: OcrLine) -> float:
    """Height per character of a column (the size of its type)."""
    return _h(ln) / max(1, len(ln.text.strip()))


def split_ruby(lines: list[OcrLine]) -> tuple[list[OcrLine], list[tuple[OcrLine, OcrLine]]]:
    """(main columns, [(ruby, its base column)]): ruby are narrow columns of smaller type, mostly kana, set
    right beside a main column (right of it in Japanese, either side accepted) and within its height."""
    cols = [ln for ln in lines if is_column(ln)]
    if len(cols) < 2:
        return list(lines), []
    med_w = _median([_w(c) for c in cols])
    med_p = _median([_pitch(c) for c in cols if len(c.text.strip()) >= 3] or [_pitch(c) for c in cols])
    rubies: list[tuple[OcrLine, OcrLine]] = []
    ids: set[int] = set()
    for c in lines:
        n = len(c.text.strip())
        if n == 0 or n > 12:
            continue
        small = _w(c) < 0.7 * med_w or (n >= 2 and _pitch(c) < 0.7 * med_p)
        if not small or _kana_share(c.text) < 0.5:
            continue
        x0, y0, x1, y1 = c.bounds
        best, best_gap = None, None
        for m in cols:
            if m is c or _w(m) < 0.8 * med_w or len(m.text.strip()) <= n:
                continue
            mx0, my0, mx1, my1 = m.bounds
            gap = max(x0 - mx1, mx0 - x1)  # negative when they overlap horizontally
            if gap > 0.6 * med_w or min(x1, mx1) - max(x0, mx0) > 0.5 * (x1 - x0):
                continue  # too far, or on top of the column (a piece of it, not beside it)
            if y0 < my0 - 0.5 * med_w or y1 > my1 + 0.5 * med_w:
                continue
            if best_gap is None or gap < best_gap:
                best, best_gap = m, gap
        if best is not None:
            rubies.append((c, best))
            ids.add(id(c))
    return [ln for ln in lines if id(ln) not in ids], rubies


def _x_cuts(lines: list[OcrLine], min_gap: float) -> list[list[OcrLine]]:
    """Split into groups at blank vertical strips at least min_gap wide that no line crosses, right to left."""
    items = sorted(lines, key=lambda ln: -ln.bounds[2])
    groups: list[list[OcrLine]] = [[items[0]]]
    left = items[0].bounds[0]
    for ln in items[1:]:
        if left - ln.bounds[2] >= min_gap:
            groups.append([ln])
        else:
            groups[-1].append(ln)
        left = min(left, ln.bounds[0])
    return groups


def _y_cuts(lines: list[OcrLine], min_gap: float) -> list[list[OcrLine]]:
    """Split into groups at blank horizontal strips at least min_gap high that no line crosses, top to bottom."""
    items = sorted(lines, key=lambda ln: ln.bounds[1])
    groups: list[list[OcrLine]] = [[items[0]]]
    bottom = items[0].bounds[3]
    for ln in items[1:]:
        if ln.bounds[1] - bottom >= min_gap:
            groups.append([ln])
        else:
            groups[-1].append(ln)
        bottom = max(bottom, ln.bounds[3])
    return groups


def _columns_right_to_left(lines: list[OcrLine]) -> list[OcrLine]:
    """One block: columns right to left; pieces of one column (overlapping horizontally) top to bottom."""
    items = sorted(lines, key=lambda ln: -ln.bounds[2])
    cols: list[list[OcrLine]] = []
    for ln in items:
        x0, _, x1, _ = ln.bounds
        for col in cols:
            cx0 = min(c.bounds[0] for c in col)
            cx1 = max(c.bounds[2] for c in col)
            if min(x1, cx1) - max(x0, cx0) > 0.5 * min(x1 - x0, cx1 - cx0):
                col.append(ln)
                break
        else:
            cols.append([ln])
    cols.sort(key=lambda col: -sum((c.bounds[0] + c.bounds[2]) / 2 for c in col) / len(col))
    return [ln for col in cols for ln in sorted(col, key=lambda c: c.bounds[1])]


def _vblocks(lines: list[OcrLine], col_w: float, col_gap: float, depth: int = 0) -> list[list[OcrLine]]:
    """Recursive cut for vertical text: pages of a spread at a wide gutter (right first), then tiers at blank
    strips across the block (top first), down to blocks of columns."""
    if len(lines) < 2 or depth > 6:
        return [lines]
    pages = _x_cuts(lines, max(1.5 * col_w, 2.5 * col_gap))
    if len(pages) > 1:
        return [b for p in pages for b in _vblocks(p, col_w, col_gap, depth + 1)]
    tiers = _y_cuts(lines, 0.8 * col_w)
    if len(tiers) > 1:
        return [b for t in tiers for b in _vblocks(t, col_w, col_gap, depth + 1)]
    return [lines]


def _span(ruby: OcrLine, base: OcrLine) -> tuple[int, int]:
    """The characters of the base column that the ruby stands beside, [start, end): those whose centres lie
    along the ruby's extent (the column's height shared evenly among its characters); the nearest one when the
    ruby is shorter than a character."""
    n = len(base.text)
    if n == 0:
        return 0, 0
    top, bottom = base.bounds[1], base.bounds[3]
    pitch = max(bottom - top, 1.0) / n
    r0, r1 = ruby.bounds[1], ruby.bounds[3]
    inside = [k for k in range(n) if r0 <= top + (k + 0.5) * pitch <= r1]
    if not inside:
        k = min(n - 1, max(0, math.floor(((r0 + r1) / 2 - top) / pitch)))
        return k, k + 1
    return inside[0], inside[-1] + 1


def order_vertical(lines: list[OcrLine], ruby: bool = True) -> VerticalReading:
    """Vertical lines in reading order (blocks: spread pages right to left, tiers top to bottom; columns right
    to left inside each block), with ruby taken out (when `ruby`) and kept as annotations of their column."""
    if not lines:
        return VerticalReading([])
    main, pairs = split_ruby(lines) if ruby else (list(lines), [])
    cols = [ln for ln in main if is_column(ln)] or main
    col_w = _median([_w(c) for c in cols]) or 1.0
    xs = sorted(cols, key=lambda ln: ln.bounds[0])
    gaps = [b.bounds[0] - a.bounds[2] for a, b in zip(xs, xs[1:]) if b.bounds[0] - a.bounds[2] > 0]
    col_gap = _median(gaps) if gaps else 0.3 * col_w
    blocks = _vblocks(main, col_w, col_gap)
    ordered = [ln for block in blocks for ln in _columns_right_to_left(block)]
    index = {id(ln): i for i, ln in enumerate(ordered)}
    notes = []
    if len(blocks) > 1:
        notes.append(f"vertical text in {len(blocks)} blocks (pages of a spread right to left, tiers top to bottom)")
    annotations = [Ruby(r.text, r.box, index.get(id(base), -1), r.confidence, *_span(r, base)) for r, base in pairs]
    if annotations:
        notes.append(f"{len(annotations)} ruby (furigana) annotation(s) kept apart from the main text")
    return VerticalReading(ordered, annotations, len(blocks), notes)
