"""Tables: ruled tables from their drawn lines (merged cells included), unruled tables from aligned
text columns; exports as CSV, XLSX, Markdown and HTML (cell text always escaped).

Ruled: rules are found on the image (thin ones too; a shaded row counts by its outline, a chart's grid is
no table); where a ruled band or column holds several rows or columns of text (a table ruled only around
its body or only between its rows) the text's own rows and columns divide it. A missing rule joins two
cells only where text runs over it or the rule is there in most other rows. Unruled: lines are grouped
into rows by their median centre (no drift), columns come from the x ranges no row covers, a line over
a column gap spans columns (a centred header is widened to the group it heads), a label centred beside
rows spans them, a cell's text wrapped onto more lines stays one cell, rows of one part inside a table
stay in it, and captions and notes in prose are left out. Measured in docs/ocr-tables.md.
"""

from __future__ import annotations

import csv
import html
import io
import re
from typing import Any, Callable

import cv2
import numpy as np

from core.ocr.preprocess import to_gray
from core.ocr.scripts import order_lines
from core.ocr.types import OcrLine, Table, TableCell

CellReader = Callable[[np.ndarray], str]
TABLES_VERSION = "2"  # 2: the structure rebuilt as docs/ocr-tables.md says (goes into the OCR cache key)


def _positions(profile: np.ndarray, min_gap: int) -> list[int]:
    """Centres of runs of True in a 1-D boolean profile, merging runs closer than min_gap."""
    idx = np.flatnonzero(profile)
    if idx.size == 0:
        return []
    groups = [[int(idx[0])]]
    for i in idx[1:]:
        if i - groups[-1][-1] <= min_gap:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
    return [int(round((g[0] + g[-1]) / 2)) for g in groups]


def _rule_mask(gray: np.ndarray) -> np.ndarray:
    """Ink mask for rules: like text_mask but without its median blur, which erases rules one pixel thin."""
    if np.median(gray) < 110:  # light on dark
        gray = 255 - gray
    block = max(15, (min(gray.shape[:2]) // 20) | 1)
    return cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 15)


def _line_masks(gray: np.ndarray, text_height: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    mask = _rule_mask(gray)
    h, w = mask.shape
    # solid areas (a shaded header row, a coloured cell) are not rules, their edges are: ink thicker than a
    # rule in both directions is replaced by its outline
    thick = max(3, int(round(0.4 * text_height)))
    solid = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((thick + 2, thick + 2), np.uint8))
    if solid.any():
        outline = cv2.morphologyEx(solid, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        mask = cv2.bitwise_or(cv2.bitwise_and(mask, cv2.bitwise_not(solid)), outline)
    # rules are longer than any letter stroke: horizontal ones three text heights, vertical ones 1.2
    hk = cv2.getStructuringElement(cv2.MORPH_RECT, (int(max(20, w // 25, 3 * text_height)), 1))
    v_len = max(15.0, 1.2 * text_height) if text_height else max(15, h // 40)  # a one-line row's rule is ~1.3 lines
    vk = cv2.getStructuringElement(cv2.MORPH_RECT, (1, int(v_len)))
    horiz = cv2.dilate(cv2.morphologyEx(mask, cv2.MORPH_OPEN, hk), np.ones((3, 3), np.uint8))
    vert = cv2.dilate(cv2.morphologyEx(mask, cv2.MORPH_OPEN, vk), np.ones((3, 3), np.uint8))
    return horiz, vert


def _chart_ink(ink: np.ndarray, rules: np.ndarray, lines: list[OcrLine], x: int, y: int) -> float:
    """Share of a region that is ink outside the rules and the text boxes (near 0 in a table)."""
    rest = cv2.bitwise_and(ink, cv2.bitwise_not(cv2.dilate(rules, np.ones((5, 5), np.uint8))))
    for ln in lines:
        x0, y0, x1, y1 = ln.bounds
        rest[max(int(y0) - y - 3, 0):int(y1) - y + 4, max(int(x0) - x - 3, 0):int(x1) - x + 4] = 0
    return float(np.count_nonzero(rest)) / max(rest.size, 1)


def _sentence(text: str) -> bool:
    """Prose rather than a cell: a caption or a note has many words (of three letters or more)."""
    return sum(1 for w in text.split() if sum(ch.isalpha() for ch in w) >= 3) >= 6


def _strip_captions(rows: list[list[str]], cells: list[TableCell], box: list[float]
                    ) -> tuple[list[list[str]], list[TableCell], list[float]]:
    """Without a first or last row that is one sentence over the whole width (a caption or a note the
    frame drawn around the table encloses)."""
    ncols = max((len(r) for r in rows), default=0)

    def caption(r: int) -> TableCell | None:
        own = [c for c in cells if c.row <= r < c.row + c.row_span]
        if len(own) == 1 and own[0].col_span == ncols and own[0].row_span == 1 and _sentence(own[0].text):
            return own[0]
        return None

    while len(rows) > 2 and (top := caption(0)) is not None:
        cells = [TableCell(c.row - 1, c.col, c.text, c.box, c.row_span, c.col_span) for c in cells if c is not top]
        rows = rows[1:]
        box = [box[0], top.box[3], box[2], box[3]]
    while len(rows) > 2 and (bottom := caption(len(rows) - 1)) is not None:
        cells = [c for c in cells if c is not bottom]
        rows = rows[:-1]
        box = [box[0], box[1], box[2], bottom.box[1]]
    return rows, cells, box


def _merge_close(positions: list[int], gap: int) -> list[int]:
    """Positions with runs closer than `gap` replaced by their middle."""
    out: list[list[int]] = []
    for p in positions:
        if out and p - out[-1][-1] < gap:
            out[-1].append(p)
        else:
            out.append([p])
    return [int(round((g[0] + g[-1]) / 2)) for g in out]


def _horizontal(ln: OcrLine) -> bool:
    """A line of horizontal text; one or two characters count as such even when their box is taller than
    wide (a lone "1" in a column of figures), which the engine marks vertical."""
    return not ln.vertical or len(ln.text.strip()) <= 2


def _centre(line: OcrLine) -> tuple[float, float]:
    x0, y0, x1, y1 = line.bounds
    return (x0 + x1) / 2, (y0 + y1) / 2


def _inside_rect(ln: OcrLine, x: int, y: int, w: int, h: int) -> bool:
    cx, cy = _centre(ln)
    return x <= cx <= x + w and y <= cy <= y + h


def _in_cell(ln: OcrLine, x0: float, y0: float, x1: float, y1: float) -> bool:
    cx, cy = _centre(ln)
    return x0 <= cx <= x1 and y0 <= cy <= y1


def _text_rows_in_bands(lines: list[OcrLine], ys: list[int], xs: list[int], x: int, y: int
                        ) -> tuple[list[int], set[int]]:
    """Rule positions with boundaries added between rows of figures that share one ruled band (a table ruled
    only around its body): (all positions, indices of the added ones). Bands whose lines are words (a header
    cell's text wrapped over lines) are left whole."""
    out, virtual = [ys[0]], set()
    for r in range(len(ys) - 1):
        band = [ln for ln in lines if _in_cell(ln, x + xs[0], y + ys[r], x + xs[-1], y + ys[r + 1])]
        sub = group_rows(band)
        multi = [row for row in sub if len(row) >= 2]
        parts = [ln for row in sub for ln in row]
        if len(sub) >= 2 and len(multi) >= 2 and sum(_numeric(ln.text) for ln in parts) >= 0.6 * len(parts):
            bands = [_band(row) for row in sub]
            for i in range(1, len(sub)):
                out.append(int(round((bands[i - 1][1] + bands[i][0]) / 2)) - y)
                virtual.add(len(out) - 1)
        out.append(ys[r + 1])
    return out, virtual


def _text_columns_in_grid(lines: list[OcrLine], ys: list[int], xs: list[int], x: int, y: int
                          ) -> tuple[list[int], set[int]]:
    """Rule positions with boundaries added between columns of text that share one ruled column (a table
    ruled only between its rows): (all positions, indices of the added ones)."""
    out, virtual = [xs[0]], set()
    for c in range(len(xs) - 1):
        rows = []
        for r in range(len(ys) - 1):
            parts = sorted((ln for ln in lines if _in_cell(ln, x + xs[c], y + ys[r], x + xs[c + 1], y + ys[r + 1])),
                           key=lambda m: m.bounds[0])
            for row in group_rows(parts):
                rows.append(row)
        if sum(1 for row in rows if len(row) >= 2) >= 2:
            cols = _columns(rows, 2)
            for i in range(1, len(cols)):
                out.append(int(round((cols[i - 1][1] + cols[i][0]) / 2)) - x)
                virtual.add(len(out) - 1)
        out.append(xs[c + 1])
    return out, virtual


def find_ruled_tables(image: np.ndarray, lines: list[OcrLine], page: int,
                      reader: CellReader | None = None) -> list[Table]:
    """Tables drawn with lines: grid from horizontal/vertical rules, merged cells where a rule is missing."""
    gray = to_gray(image)
    heights = [ln.bounds[3] - ln.bounds[1] for ln in lines if _horizontal(ln)]
    text_h = float(np.median(heights)) if heights else 0.0
    horiz, vert = _line_masks(gray, text_h)
    ink = _rule_mask(gray)
    grid = cv2.bitwise_or(horiz, vert)
    contours, _ = cv2.findContours(grid, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    h, w = gray.shape
    tables: list[Table] = []
    for cnt in contours:
        x, y, cw, ch = cv2.boundingRect(cnt)
        if cw < max(w * 0.15, 80) or ch < 40:
            continue
        hsub = horiz[y:y + ch, x:x + cw] > 0
        vsub = vert[y:y + ch, x:x + cw] > 0
        # partial rules count too (they separate merged-cell regions); rules closer than half a text line
        # (a frame and the edge of a shaded row, the two edges of a white separator) are one
        gap = int(max(4, 0.5 * text_h))
        ys = _merge_close(sorted(set(_positions(hsub.mean(axis=1) > 0.5, 4)) |
                                 set(_positions(hsub.mean(axis=1) > 0.08, 4))), gap)
        xs = _merge_close(sorted(set(_positions(vsub.mean(axis=0) > 0.2, 4)) |
                                 set(_positions(vsub.mean(axis=0) > 0.08, 4))), gap)
        if len(ys) < 3 or len(xs) < 2 or (len(ys) - 1) * (len(xs) - 1) < 4:
            continue
        # real rules span the table: at least two vertical rules over most of its height
        if int(np.sum(vsub.mean(axis=0) > 0.6)) < 2 or sum(1 for ln in lines if _inside_rect(ln, x, y, cw, ch)) < 2:
            continue
        inside = [ln for ln in lines if _horizontal(ln) and _inside_rect(ln, x, y, cw, ch)]
        # a table without an outer frame: its first and last columns (rows) end where its rules end
        if any(_centre(ln)[0] - x < xs[0] for ln in inside):
            xs = [0] + xs
        if any(_centre(ln)[0] - x > xs[-1] for ln in inside):
            xs = xs + [cw - 1]
        if any(_centre(ln)[1] - y < ys[0] for ln in inside):
            ys = [0] + ys
        if any(_centre(ln)[1] - y > ys[-1] for ln in inside):
            ys = ys + [ch - 1]
        # little text and ink that is neither rules nor text (bars, curves, a picture): a chart, not a table
        text_share = sum((ln.bounds[2] - ln.bounds[0]) * (ln.bounds[3] - ln.bounds[1]) for ln in inside) / (cw * ch)
        if text_share < 0.04 or text_share < 0.12 and _chart_ink(ink[y:y + ch, x:x + cw], grid[y:y + ch, x:x + cw],
                                                                  inside, x, y) > 0.005:
            continue
        ys, virtual = _text_rows_in_bands(inside, ys, xs, x, y)
        xs, virtual_x = _text_columns_in_grid(inside, ys, xs, x, y)
        nr, nc = len(ys) - 1, len(xs) - 1
        parent = list(range(nr * nc))

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        def union(a: int, b: int) -> None:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)

        def ruled(r: int, xb: int) -> bool:
            y0, y1 = ys[r] + 3, ys[r + 1] - 3
            seg = vsub[max(y0, 0):max(y1, y0 + 1), max(xb - 3, 0):xb + 4]
            return bool(seg.size) and seg.any(axis=1).mean() >= 0.5

        # a boundary ruled in fewer than half the rows is a column of the layout, not a rule that a merged
        # cell interrupts: there, cells are one only where a line of text runs over it
        mostly_ruled = {c: sum(ruled(r, xs[c]) for r in range(nr)) >= 0.5 * nr for c in range(1, nc)}
        for r in range(nr):
            # which grid columns each line of this row covers
            spans_of = []
            for ln in inside:
                if _in_cell(ln, x + xs[0], y + ys[r], x + xs[-1], y + ys[r + 1]):
                    spans_of.append({c for c in range(nc) if min(ln.bounds[2], x + xs[c + 1]) -
                                     max(ln.bounds[0], x + xs[c]) > 3})
            for c in range(nc - 1):
                xb = xs[c + 1]
                crossed = any(c in cs and c + 1 in cs for cs in spans_of)
                if c + 1 in virtual_x:
                    # a boundary between text columns (no rule): apart unless a line of this row runs over it
                    if crossed:
                        union(r * nc + c, r * nc + c + 1)
                    continue
                if not ruled(r, xb):
                    # no rule here: one cell over both, unless each side has text of its own
                    both = any(c in cs and c + 1 not in cs for cs in spans_of) and \
                        any(c + 1 in cs and c not in cs for cs in spans_of)
                    if crossed or (mostly_ruled[c + 1] and not both):
                        union(r * nc + c, r * nc + c + 1)
        for c in range(nc):
            x0, x1 = xs[c] + 3, xs[c + 1] - 3
            for r in range(nr - 1):
                yb = ys[r + 1]
                if r + 1 in virtual:
                    # a boundary between text rows (no rule): cells stay apart where the column has text on
                    # both sides of it, else the text there spans both (a label beside several rows)
                    above = any(_in_cell(ln, x + xs[c], y + ys[r], x + xs[c + 1], y + ys[r + 1]) for ln in inside)
                    below = any(_in_cell(ln, x + xs[c], y + ys[r + 1], x + xs[c + 1], y + ys[r + 2]) for ln in inside)
                    if not (above and below):
                        union(r * nc + c, (r + 1) * nc + c)
                    continue
                seg = hsub[max(yb - 3, 0):yb + 4, max(x0, 0):max(x1, x0 + 1)]
                if seg.size and seg.any(axis=0).mean() < 0.5:
                    union(r * nc + c, (r + 1) * nc + c)
        texts: dict[int, list[OcrLine]] = {}
        for ln in lines:
            cx, cy = _centre(ln)
            cx, cy = cx - x, cy - y
            if not (xs[0] <= cx <= xs[-1] and ys[0] <= cy <= ys[-1]):
                continue
            r = min(max(int(np.searchsorted(ys, cy)) - 1, 0), nr - 1)
            c = min(max(int(np.searchsorted(xs, cx)) - 1, 0), nc - 1)
            texts.setdefault(find(r * nc + c), []).append(ln)
        placed = sum(len(v) for v in texts.values())
        if placed >= 6 and nr * nc >= 6 and max(len(v) for v in texts.values()) > 0.5 * placed:
            continue  # most of the text in one cell of many: the rules are a frame or a chart's grid, not cells
        rows = [["" for _ in range(nc)] for _ in range(nr)]
        cells: list[TableCell] = []
        groups: dict[int, list[int]] = {}
        for i in range(nr * nc):
            groups.setdefault(find(i), []).append(i)
        for root, members in groups.items():
            rr = [m // nc for m in members]
            cc = [m % nc for m in members]
            r0, c0 = min(rr), min(cc)
            box = [float(x + xs[c0]), float(y + ys[r0]), float(x + xs[max(cc) + 1]), float(y + ys[max(rr) + 1])]
            parts = order_lines(texts.get(root, []), columns=False)
            text = "\n".join(p.text for p in parts)
            if not text and reader is not None and nr * nc <= 80:
                crop = image[int(box[1]) + 3:int(box[3]) - 2, int(box[0]) + 3:int(box[2]) - 2]
                if crop.size and float(to_gray(crop).std()) > 12:
                    text = reader(crop).strip()
            rows[r0][c0] = text
            cells.append(TableCell(r0, c0, text, box, max(rr) - r0 + 1, max(cc) - c0 + 1))
        box = [float(x), float(y), float(x + cw), float(y + ch)]
        rows, cells, box = _strip_captions(rows, cells, box)
        if sum(1 for r in rows for t in r if t) < 2:
            continue
        tables.append(Table(page, "ruled", box, rows, sorted(cells, key=lambda c: (c.row, c.col))))
    tables.sort(key=lambda t: t.box[1])
    return tables


def _height(ln: OcrLine) -> float:
    return ln.bounds[3] - ln.bounds[1]


def group_rows(lines: list[OcrLine]) -> list[list[OcrLine]]:
    """Lines grouped into rows, top to bottom, each row left to right. A line joins a row when its vertical
    centre is within half a line height of the row's median centre (the row's, not its last line's, so a
    long row does not drift into the next) and it does not overlap a line of that row sideways."""
    rows: list[list[OcrLine]] = []
    centres: list[list[float]] = []
    for ln in sorted(lines, key=lambda m: (m.bounds[1] + m.bounds[3]) / 2):
        x0, y0, x1, y1 = ln.bounds
        cy, h = (y0 + y1) / 2, y1 - y0
        best, best_d = -1, float("inf")
        for i in range(max(0, len(rows) - 4), len(rows)):
            rh = float(np.median([_height(m) for m in rows[i]]))
            d = abs(cy - float(np.median(centres[i])))
            if d > 0.5 * min(h, rh) or d >= best_d:
                continue
            if any(min(x1, m.bounds[2]) - max(x0, m.bounds[0]) > 0.3 * min(x1 - x0, m.bounds[2] - m.bounds[0])
                   for m in rows[i]):
                continue
            best, best_d = i, d
        if best < 0:
            rows.append([ln])
            centres.append([cy])
        else:
            rows[best].append(ln)
            centres[best].append(cy)
    order = sorted(range(len(rows)), key=lambda i: float(np.median(centres[i])))
    return [sorted(rows[i], key=lambda m: m.bounds[0]) for i in order]


def _row_gap(upper: list[OcrLine], lower: list[OcrLine]) -> float:
    return min(m.bounds[1] for m in lower) - max(m.bounds[3] for m in upper)


def _words(ln: OcrLine) -> int:
    return len(ln.text.split())


def _blocks(rows: list[list[OcrLine]], min_cols: int) -> list[list[list[OcrLine]]]:
    """Runs of rows that may form a table: rows of several aligned parts, with rows of one part allowed inside
    (section labels, wrapped cells) and above (a header spanning the data columns), never across a wide gap."""
    blocks: list[list[list[OcrLine]]] = []
    i, n, prev_end = 0, len(rows), 0
    while i < n:
        if len(rows[i]) < min_cols:
            i += 1
            continue
        block = [rows[i]]
        j = i + 1
        while j < n:
            h = float(np.median([_height(m) for r in block[-3:] for m in r]))
            if _row_gap(block[-1], rows[j]) > 2.2 * h:
                break
            if len(rows[j]) >= min_cols:
                block.append(rows[j])
                j += 1
                continue
            # rows of one part: kept when a row of several parts follows within two rows
            k = j
            while k < n and k - j < 2 and len(rows[k]) < min_cols and _row_gap(rows[k - 1], rows[k]) <= 2.2 * h:
                k += 1
            if k < n and len(rows[k]) >= min_cols and _row_gap(rows[k - 1], rows[k]) <= 2.2 * h:
                block.extend(rows[j:k])
                j = k
                continue
            break
        # a last line of one part right under a cell of the last row, no wider than that cell's column: the
        # cell's text wrapped onto one more line
        if j < n and len(rows[j]) < min_cols and len(block) >= 2:
            seg, last = rows[j][0], block[-1]
            h = float(np.median([_height(m) for m in last]))
            under = [k for k, m in enumerate(last) if abs(m.bounds[0] - seg.bounds[0]) <= h]
            if under and _row_gap(last, rows[j]) <= 0.5 * h and (
                    under[0] + 1 >= len(last) or seg.bounds[2] < last[under[0] + 1].bounds[0]):
                block.append(rows[j])
                j += 1
        # one header row of one part right above the block: over the data columns (not at its left edge, as
        # a caption is)
        left = min(m.bounds[0] for r in block for m in r)
        right = max(m.bounds[2] for r in block for m in r)
        first_w = float(np.median([r[0].bounds[2] - r[0].bounds[0] for r in block]))
        s = i
        if s > prev_end and len(rows[s - 1]) < min_cols:
            h = float(np.median([_height(m) for m in block[0]]))
            seg = rows[s - 1][0]
            if _row_gap(rows[s - 1], rows[s]) <= 1.2 * h and seg.bounds[0] >= left + 0.5 * first_w and \
                    seg.bounds[2] <= right + h:
                s -= 1
        blocks.append(rows[s:i] + block)
        i = prev_end = j
    return blocks


def _columns(rows: list[list[OcrLine]], min_cols: int) -> list[tuple[float, float]]:
    """Column extents from where the parts of the rows lie: x ranges that (almost) no row covers separate
    columns; a part over such a gap in a few rows spans columns rather than merging them."""
    multi = [r for r in rows if len(r) >= min_cols] or rows
    x_lo = int(np.floor(min(m.bounds[0] for r in rows for m in r)))
    x_hi = int(np.ceil(max(m.bounds[2] for r in rows for m in r)))
    cover = np.zeros(x_hi - x_lo + 1, np.int32)
    for r in multi:
        seen = np.zeros_like(cover, dtype=bool)
        for m in r:
            seen[int(m.bounds[0]) - x_lo:int(np.ceil(m.bounds[2])) - x_lo] = True
        cover += seen
    allowed = int(0.12 * len(multi))
    free = cover <= allowed
    # columns: runs of covered x; a gap needs some width (a third of a character) to count
    h = float(np.median([_height(m) for r in multi for m in r]))
    cols: list[list[float]] = []
    run_start = None
    gap = 0
    for x in range(len(cover)):
        if not free[x]:
            if run_start is None:
                run_start = x
            elif gap and gap < max(1.0, 0.1 * h):
                pass  # a narrow gap inside a column
            elif gap:
                cols.append([run_start + x_lo, x - gap + x_lo])
                run_start = x
            gap = 0
        elif run_start is not None:
            gap += 1
    if run_start is not None:
        cols.append([run_start + x_lo, len(cover) - gap + x_lo])
    return [(a, b) for a, b in cols]


def _col_range(ln: OcrLine, cols: list[tuple[float, float]], share: float = 0.33) -> tuple[int, int]:
    """First and last column a part covers (by at least `share` of the column or of the part)."""
    x0, _, x1, _ = ln.bounds
    hit = [i for i, (a, b) in enumerate(cols) if min(x1, b) - max(x0, a) > share * min(b - a, x1 - x0)]
    if not hit:
        cx = (x0 + x1) / 2
        best = min(range(len(cols)), key=lambda i: 0 if cols[i][0] <= cx <= cols[i][1] else
                   min(abs(cx - cols[i][0]), abs(cx - cols[i][1])))
        return best, best
    return hit[0], hit[-1]


def _numeric(text: str) -> bool:
    """Mostly a number (digits at least as many as letters): numbers do not wrap onto a second line."""
    digits = sum(ch.isdigit() for ch in text)
    return digits > 0 and digits >= sum(ch.isalpha() for ch in text)


def _band(parts: list[OcrLine]) -> tuple[float, float]:
    """Median top and bottom of a row's lines (robust to one tall or offset line)."""
    return float(np.median([p.bounds[1] for p in parts])), float(np.median([p.bounds[3] for p in parts]))


Cells = dict[int, tuple[int, list[OcrLine]]]  # first column -> (column span, lines)


def _wraps(above: OcrLine, below: OcrLine, width: float) -> bool:
    """Text that reads on from the line above: the line above breaks a word or a list ("hexa-", "a,", "(n-"),
    or it is words filling most of its column (it wrapped because it was long) and this one starts in lower
    case."""
    text = below.text.strip()
    if not text:
        return False
    if above.text.rstrip().endswith(("-", ",", "/", "(", "&")):
        return True
    return text[0].islower() and _words(above) >= 2 and above.bounds[2] - above.bounds[0] >= 0.6 * width


def _is_continuation(prev: Cells, row: Cells, gap: float, usual_gap: float, h: float,
                     cols: list[tuple[float, float]]) -> bool:
    """Is this row the wrapped second line of the row above (cells of text over two lines)?"""
    if not prev or not row:
        return False
    if any(c not in prev or prev[c][0] != span for c, (span, _) in row.items()):
        return False

    def width(c: int, span: int) -> float:
        return cols[min(c + span, len(cols)) - 1][1] - cols[c][0]

    tight = gap < 0.75 * usual_gap - 0.1 * h
    if len(row) >= 2 and all(_wraps(prev[c][1][-1], parts[0], width(c, span)) for c, (span, parts) in row.items()):
        return True  # every cell of the row reads on from the cell above (a header wrapped in each column)
    if len(row) >= len(prev) > 1 and len(row) > 1 or len(row) == len(cols):
        return False
    if sum(_numeric(" ".join(p.text for p in parts)) for _, parts in row.values()) >= 2:
        return False  # a row of numbers is a row
    c0 = min(row)
    first, above = row[c0][1][0], prev[c0][1][-1]
    if c0 == 0 and abs(first.bounds[0] - above.bounds[0]) > 0.6 * h:
        return False  # indented under the cell above: a row of its own (a sub-item)
    return bool(first.text.strip()) and (_wraps(above, first, width(c0, row[c0][0])) or tight)


def _ink_gaps(gray: np.ndarray | None, ln: OcrLine, min_width: float) -> list[tuple[float, float]]:
    """Blank runs at least min_width wide inside a line's box on the image (x ranges, page pixels)."""
    if gray is None:
        return []
    x0, y0, x1, y1 = (int(round(v)) for v in ln.bounds)
    pad = int((y1 - y0) * 0.2)  # the middle of the box: its edges may touch the lines above and below
    x0, y0 = max(x0, 0), max(y0 + pad, 0)
    x1, y1 = min(x1, gray.shape[1]), min(y1 - pad, gray.shape[0])
    crop = gray[y0:y1, x0:x1]
    if crop.size == 0 or crop.shape[1] < 3 * min_width:
        return []
    thr = min(float(np.median(crop)) - 40.0, float(crop.mean()) - 10.0)
    ink = (crop < thr).any(axis=0)
    if not ink.any():
        return []
    cols = np.flatnonzero(ink)
    first, last = int(cols[0]), int(cols[-1])
    gaps, start = [], None
    for x in range(first, last + 1):
        if not ink[x]:
            start = x if start is None else start
        elif start is not None:
            if x - start >= min_width:
                gaps.append((float(x0 + start), float(x0 + x)))
            start = None
    return gaps


def _split_text(text: str, left_w: float, right_w: float) -> tuple[str, str] | None:
    """Split text at the space that best shares its characters as the ink is shared (None: no good split)."""
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if not spaces or left_w <= 0 or right_w <= 0:
        return None
    target = left_w / (left_w + right_w)
    total = len(text.replace(" ", "")) or 1
    best = min(spaces, key=lambda i: abs(len(text[:i].replace(" ", "")) / total - target))
    if abs(len(text[:best].replace(" ", "")) / total - target) > 0.2:
        return None
    left, right = text[:best].strip(), text[best:].strip()
    return (left, right) if left and right else None


def _piece(ln: OcrLine, text: str, x0: float, x1: float) -> OcrLine:
    _, y0, _, y1 = ln.bounds
    return OcrLine(text, [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], ln.confidence, ln.vertical)


def split_at_gaps(ln: OcrLine, gray: np.ndarray | None, min_width: float,
                  at: list[float] | None = None) -> list[OcrLine]:
    """A line cut where its ink has a blank run at least min_width wide (only the runs over the x positions
    `at`, when given): what the engine read as one line over two cells becomes one line per cell."""
    gaps = _ink_gaps(gray, ln, min_width)
    if at is not None:
        gaps = [g for g in gaps if any(g[0] - min_width <= x <= g[1] + min_width for x in at)]
    if not gaps:
        return [ln]
    x0, _, x1, _ = ln.bounds
    g0, g1 = max(gaps, key=lambda g: g[1] - g[0])
    parts = _split_text(ln.text, g0 - x0, x1 - g1)
    if parts is None:
        return [ln]
    left = _piece(ln, parts[0], x0, g0)
    right = _piece(ln, parts[1], g1, x1)
    return split_at_gaps(left, gray, min_width, at) + split_at_gaps(right, gray, min_width, at)


def split_wide_gaps(ln: OcrLine, gray: np.ndarray | None) -> list[OcrLine]:
    """A line cut at blank runs of its ink that no word space is as wide as: 1.2 line heights between words,
    half a line height between two figures ("55.3   40.0   59" read as one line over three cells)."""
    h = _height(ln)
    if gray is None or " " not in ln.text.strip() or h <= 0:
        return [ln]
    x0, _, x1, _ = ln.bounds
    for g0, g1 in sorted(_ink_gaps(gray, ln, max(2.0, 0.5 * h)), key=lambda g: g[0] - g[1]):
        parts = _split_text(ln.text, g0 - x0, x1 - g1)
        if parts is None:
            continue
        if g1 - g0 >= 1.2 * h or (_data_like(parts[0].split()[-1]) and _data_like(parts[1].split()[0])):
            return split_wide_gaps(_piece(ln, parts[0], x0, g0), gray) + split_wide_gaps(_piece(ln, parts[1], g1, x1), gray)
    return [ln]


def _place(row: list[OcrLine], cols: list[tuple[float, float]]) -> Cells:
    """A row's lines by first column, with column spans. A line over two or more columns (a header over
    a group of columns) is widened, both sides alike, while the columns beside it are empty and the group
    stays centred on it: a centred header is narrower than the columns it heads."""
    # a line alone in its row that reaches into the columns beside it heads them (or labels the section)
    ranges = [list(_col_range(m, cols, 0.33 if len(row) > 1 else 0.1)) for m in row]
    for k, m in enumerate(row):
        c0, c1 = ranges[k]
        if c1 == c0 and m.bounds[2] - m.bounds[0] < 1.5 * (cols[c0][1] - cols[c0][0]):
            continue  # in one column (a label wider than its column by half or more heads those beside it)
        centre = (m.bounds[0] + m.bounds[2]) / 2
        while c0 > 0 and c1 < len(cols) - 1:
            taken = {c for j, (a, b) in enumerate(ranges) if j != k for c in range(a, b + 1)}
            if c0 - 1 in taken or c1 + 1 in taken:
                break
            mid = (cols[c0 - 1][0] + cols[c1 + 1][1]) / 2
            if abs(mid - centre) > 0.5 * min(cols[c0 - 1][1] - cols[c0 - 1][0], cols[c1 + 1][1] - cols[c1 + 1][0]):
                break
            c0, c1 = c0 - 1, c1 + 1
        ranges[k] = [c0, c1]
    cells: Cells = {}
    for m, (c0, c1) in zip(row, ranges):
        if c0 in cells:
            span, parts = cells[c0]
            cells[c0] = (max(span, c1 - c0 + 1), parts + [m])
        else:
            cells[c0] = (c1 - c0 + 1, [m])
    return cells


def _row_spans(rows: list[Cells]) -> dict[tuple[int, int], int]:
    """(row, col) -> last row spanned, for cells that sit over the rows beside them (a label centred beside two
    or more rows whose own cells in that column are empty). Such a label, grouped into one of those rows or
    into a row of its own, moves up to the first row it covers; a row left empty is dropped by the caller."""
    bands = [_band([p for _, parts in cells.values() for p in parts]) if cells else (0.0, 0.0) for cells in rows]

    def covers(parts: list[OcrLine], r: int) -> bool:
        top, bot = min(p.bounds[1] for p in parts), max(p.bounds[3] for p in parts)
        t, b = bands[r]
        return b > t and min(bot, b) - max(top, t) >= 0.35 * (b - t)

    def free(r: int, c: int, span: int) -> bool:
        return len(rows[r]) >= 2 and all(not (c0 <= c < c0 + s or c <= c0 < c + span) for c0, (s, _) in rows[r].items())

    spans: dict[tuple[int, int], int] = {}
    for r in range(len(rows)):
        for c in sorted(rows[r]):
            span, parts = rows[r][c]
            start = r
            while start > 0 and free(start - 1, c, span) and covers(parts, start - 1):
                start -= 1
            end = r
            while end + 1 < len(rows) and free(end + 1, c, span) and covers(parts, end + 1):
                end += 1
            covered = sum(1 for i in range(start, end + 1) if i != r or len(rows[r]) > 1)
            if end > start and covered >= 2:
                if start != r:
                    rows[start][c] = rows[r].pop(c)
                spans[(start, c)] = end
    return spans


def _data_like(text: str) -> bool:
    """A figure or a mark standing for one (a dash, a tick): what fills a table's body, not its header."""
    return _numeric(text) or (bool(text.strip()) and not any(ch.isalpha() for ch in text))


def _merge_header_lines(rows: list[Cells], min_cols: int, usual_gap: float) -> list[Cells]:
    """Header lines above the first row of figures that are one header row with its labels wrapped over
    several lines (bottom-aligned labels: "Asian/" over "Pacific" over "Islander", beside "Year" on the last
    line): each label of the upper line has one below it, and neither line holds figures. Lines holding a
    label over several columns stay rows of their own, as do labels alone on a line."""
    def texts(cells: Cells) -> list[str]:
        return [" ".join(p.text for p in parts) for _, parts in cells.values()]

    first = next((i for i, cells in enumerate(rows) if sum(_data_like(t) for t in texts(cells)) >= 2), None)
    if first is None or first < 2:
        return rows
    out: list[Cells] = []
    for i, cells in enumerate(rows):
        upper = out[-1] if out else {}
        if 0 < i < first and len(cells) >= min_cols and len(upper) <= len(cells) and set(upper) <= set(cells) and \
                all(s == 1 for s, _ in list(cells.values()) + list(upper.values())) and \
                not any(_data_like(t) for t in texts(cells) + texts(upper)):
            above = [p for _, parts in upper.values() for p in parts]
            below = [p for _, parts in cells.values() for p in parts]
            if _band(below)[0] - _band(above)[1] <= 1.5 * max(usual_gap, 0.0) + 2:
                out[-1] = {c: (span, upper[c][1] + parts if c in upper else parts) for c, (span, parts) in cells.items()}
                continue
        out.append(dict(cells))
    return out


def _grid_from_block(block: list[list[OcrLine]], page: int, min_cols: int,
                     gray: np.ndarray | None = None) -> Table | None:
    # a caption above ("Table 3.  Enrolment by ...") or a note below, in one or two parts, running over the
    # columns of the rest: not rows
    def prose(row: list[OcrLine], rest: list[list[OcrLine]]) -> bool:
        if len(row) > 2 or not _sentence(" ".join(m.text for m in row)):
            return False
        cols = _columns(rest, min_cols)
        widest = max(row, key=lambda m: m.bounds[2] - m.bounds[0])
        over = [c for c in cols if min(widest.bounds[2], c[1]) - max(widest.bounds[0], c[0]) > 0.1 * (c[1] - c[0])]
        return len(over) >= 2

    while len(block) > 2 and prose(block[0], block[1:]):
        block = block[1:]
    while len(block) > 2 and prose(block[-1], block[:-1]):
        block = block[:-1]
    cols = _columns(block, min_cols)
    if len(cols) < min_cols:
        return None
    h = float(np.median([_height(m) for r in block for m in r]))
    if gray is not None and len(cols) > 1:
        # a line over a column gap whose ink is blank there is two cells the engine read as one
        edges = [(cols[i][1] + cols[i + 1][0]) / 2 for i in range(len(cols) - 1)]
        block = [sorted((p for m in r for p in split_at_gaps(m, gray, max(2.0, 0.4 * h), edges)),
                        key=lambda m: m.bounds[0]) for r in block]
    ncols = len(cols)
    placed = [_place(r, cols) for r in block]
    bands = [_band(r) for r in block]
    gaps = [bands[i][0] - bands[i - 1][1] for i in range(1, len(block))]
    multi_gaps = [g for i, g in enumerate(gaps, 1) if len(placed[i]) >= min_cols and len(placed[i - 1]) >= min_cols]
    usual = float(np.median(multi_gaps or gaps or [h]))
    merged: list[Cells] = []
    for i, cells in enumerate(placed):
        if merged and _is_continuation(merged[-1], cells, gaps[i - 1], usual, h, cols):
            for c, (span, parts) in cells.items():
                s0, p0 = merged[-1][c]
                merged[-1][c] = (s0, p0 + parts)
            continue
        merged.append(dict(cells))
    merged = _merge_header_lines(merged, min_cols, usual)
    ends = _row_spans(merged)
    kept = [i for i, cells in enumerate(merged) if cells]
    new_index = {old: new for new, old in enumerate(kept)}
    spans = {(new_index[r], c): sum(1 for i in kept if r <= i <= end) for (r, c), end in ends.items()}
    merged = [merged[i] for i in kept]
    grid = [["" for _ in range(ncols)] for _ in merged]
    out_cells: list[TableCell] = []
    for r, cells in enumerate(merged):
        for c, (span, parts) in sorted(cells.items()):
            span = min(span, ncols - c)
            text = "\n".join(" ".join(p.text for p in line) for line in group_rows(parts))
            grid[r][c] = text
            x0 = min(p.bounds[0] for p in parts)
            y0 = min(p.bounds[1] for p in parts)
            x1 = max(p.bounds[2] for p in parts)
            y1 = max(p.bounds[3] for p in parts)
            out_cells.append(TableCell(r, c, text, [x0, y0, x1, y1], spans.get((r, c), 1), span))
    nrows = len(merged)
    filled = sum(span for cells in merged for span, _ in cells.values())
    multi_rows = sum(1 for cells in merged if len(cells) >= min_cols)
    if nrows < 2 or multi_rows < 2 or nrows * ncols < 6 or filled < 0.4 * nrows * ncols:
        return None
    # two columns of prose (a two-column page) are not a table
    words = [_words(m) for r in block for m in r]
    if float(np.median(words)) > 5 and ncols <= 3:
        return None
    x0 = min(m.bounds[0] for r in block for m in r)
    x1 = max(m.bounds[2] for r in block for m in r)
    y0 = min(m.bounds[1] for m in block[0])
    y1 = max(m.bounds[3] for m in block[-1])
    return Table(page, "unruled", [x0, y0, x1, y1], grid, out_cells)


def find_unruled_tables(lines: list[OcrLine], page: int, exclude: list[list[float]] | None = None,
                        min_rows: int = 2, min_cols: int = 2, image: np.ndarray | None = None) -> list[Table]:
    """Tables without rules: runs of rows whose parts line up in the same columns. Parts over a column gap
    span columns; a row's wrapped second line joins its cell; rows of one part inside a table stay in it."""
    def inside(ln: OcrLine) -> bool:
        cx, cy = _centre(ln)
        return any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in exclude or [])

    items = [ln for ln in lines if _horizontal(ln) and not inside(ln) and ln.text.strip()]
    if len(items) < 2 * min_cols:
        return []
    gray = to_gray(image) if image is not None else None
    items = [p for ln in items for p in split_wide_gaps(ln, gray)]
    tables: list[Table] = []
    for block in _blocks(group_rows(items), min_cols):
        if len(block) < min_rows:
            continue
        t = _grid_from_block(block, page, min_cols, gray)
        if t is not None and t.shape[0] >= min_rows:
            tables.append(t)
    return tables


def find_tables(image: np.ndarray, lines: list[OcrLine], page: int, reader: CellReader | None = None) -> list[Table]:
    """Ruled tables first, then unruled ones among the remaining lines (boxes in `image` pixels)."""
    ruled = find_ruled_tables(image, lines, page, reader)
    return ruled + find_unruled_tables(lines, page, exclude=[t.box for t in ruled], image=image)


def map_table(table: Table, to_original: Callable[[list[list[float]]], list[list[float]]]) -> Table:
    """The same table with its boxes mapped by `to_original` (processed -> original page pixels)."""
    def rect(b: list[float]) -> list[float]:
        pts = to_original([[b[0], b[1]], [b[2], b[1]], [b[2], b[3]], [b[0], b[3]]])
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return [min(xs), min(ys), max(xs), max(ys)]

    cells = [TableCell(c.row, c.col, c.text, rect(c.box), c.row_span, c.col_span) for c in table.cells]
    return Table(table.page, table.kind, rect(table.box), table.rows, cells)


# ---- exports -------------------------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+|\d{1,3}(?:,\d{3})+)(?:[.,]\d+)?")


def spreadsheet_safe(value: Any) -> Any:
    """A cell value a spreadsheet opens as text, never as a formula (OWASP CSV injection): text starting with
    = + - @ TAB or CR gets a leading single quote; a plain number such as -12.50 or -1,234.56 stays as it is
    (digits and separators only, nothing a formula could call). Non-text values are returned unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def table_to_csv(table: Table) -> str:
    """The table as CSV text (cells that would start a formula are escaped, see spreadsheet_safe)."""
    buf = io.StringIO()
    csv.writer(buf).writerows([spreadsheet_safe(v) for v in row] for row in table.rows)
    return buf.getvalue()


def table_to_markdown(table: Table) -> str:
    """The table as a GitHub Markdown table (pipes escaped, line breaks as <br>)."""
    if not table.rows:
        return ""
    ncols = table.shape[1]

    def cell(t: str) -> str:
        return html.escape(t, quote=False).replace("|", "\\|").replace("\n", "<br>")

    rows = [r + [""] * (ncols - len(r)) for r in table.rows]
    out = ["| " + " | ".join(cell(t) for t in rows[0]) + " |", "|" + "---|" * ncols]
    out += ["| " + " | ".join(cell(t) for t in r) + " |" for r in rows[1:]]
    return "\n".join(out) + "\n"


def table_to_html(table: Table) -> str:
    """The table as an HTML <table>; every cell's text is escaped, spans become colspan/rowspan."""
    spans = {(c.row, c.col): (c.row_span, c.col_span) for c in table.cells}
    covered = set()
    for (r, c), (rs, cs) in spans.items():
        for i in range(r, r + rs):
            for j in range(c, c + cs):
                if (i, j) != (r, c):
                    covered.add((i, j))
    out = ["<table>"]
    for r, row in enumerate(table.rows):
        out.append("<tr>")
        for c, text in enumerate(row):
            if (r, c) in covered:
                continue
            rs, cs = spans.get((r, c), (1, 1))
            attrs = (f' rowspan="{rs}"' if rs > 1 else "") + (f' colspan="{cs}"' if cs > 1 else "")
            out.append(f"<td{attrs}>{html.escape(text).replace(chr(10), '<br>')}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "\n".join(out) + "\n"


def tables_to_xlsx(tables: list[Table]) -> bytes:
    """All tables as an XLSX workbook (one sheet per table), as bytes."""
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    if not tables:
        wb.create_sheet("no tables")
    for i, t in enumerate(tables, 1):
        ws = wb.create_sheet(f"p{t.page + 1} table {i}"[:31])
        for row in t.rows:
            # a leading "=" would make a formula out of OCR text: store it as text
            ws.append([spreadsheet_safe(v) for v in row])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()

