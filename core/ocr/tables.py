"""Tables: ruled tables from their drawn lines (merged cells included), unruled tables from aligned
text columns; exports as CSV, XLSX, Markdown and HTML (cell text always escaped)."""

from __future__ import annotations

import csv
import html
import io
import re
from typing import Any, Callable

import cv2
import numpy as np

from core.ocr.preprocess import text_mask, to_gray
from core.ocr.scripts import order_lines
from core.ocr.types import OcrLine, Table, TableCell

CellReader = Callable[[np.ndarray], str]


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


def _line_masks(gray: np.ndarray, text_height: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    mask = text_mask(gray)
    h, w = mask.shape
    # rules are longer than any letter stroke: at least twice the text height
    hk = cv2.getStructuringElement(cv2.MORPH_RECT, (int(max(20, w // 25, 3 * text_height)), 1))
    vk = cv2.getStructuringElement(cv2.MORPH_RECT, (1, int(max(15, h // 40, 1.6 * text_height))))
    horiz = cv2.dilate(cv2.morphologyEx(mask, cv2.MORPH_OPEN, hk), np.ones((3, 3), np.uint8))
    vert = cv2.dilate(cv2.morphologyEx(mask, cv2.MORPH_OPEN, vk), np.ones((3, 3), np.uint8))
    return horiz, vert


def _centre(line: OcrLine) -> tuple[float, float]:
    x0, y0, x1, y1 = line.bounds
    return (x0 + x1) / 2, (y0 + y1) / 2


def _inside_rect(ln: OcrLine, x: int, y: int, w: int, h: int) -> bool:
    cx, cy = _centre(ln)
    return x <= cx <= x + w and y <= cy <= y + h


def find_ruled_tables(image: np.ndarray, lines: list[OcrLine], page: int,
                      reader: CellReader | None = None) -> list[Table]:
    """Tables drawn with lines: grid from horizontal/vertical rules, merged cells where a rule is missing."""
    gray = to_gray(image)
    heights = [ln.bounds[3] - ln.bounds[1] for ln in lines if not ln.vertical]
    horiz, vert = _line_masks(gray, float(np.median(heights)) if heights else 0.0)
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
        ys = _positions(hsub.mean(axis=1) > 0.5, 4)
        xs = _positions(vsub.mean(axis=0) > 0.2, 4)
        # keep partial rules too (they separate merged-cell regions)
        ys_all = _positions(hsub.mean(axis=1) > 0.08, 4)
        xs_all = _positions(vsub.mean(axis=0) > 0.08, 4)
        ys = sorted(set(ys) | set(ys_all))
        xs = sorted(set(xs) | set(xs_all))
        if len(ys) < 3 or len(xs) < 2 or (len(ys) - 1) * (len(xs) - 1) < 4:
            continue
        # real rules span the table: at least two vertical rules over most of its height
        if int(np.sum(vsub.mean(axis=0) > 0.6)) < 2 or sum(1 for ln in lines if _inside_rect(ln, x, y, cw, ch)) < 2:
            continue
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

        for r in range(nr):
            y0, y1 = ys[r] + 3, ys[r + 1] - 3
            for c in range(nc - 1):
                xb = xs[c + 1]
                seg = vsub[max(y0, 0):max(y1, y0 + 1), max(xb - 3, 0):xb + 4]
                if seg.size and seg.any(axis=1).mean() < 0.5:
                    union(r * nc + c, r * nc + c + 1)
        for c in range(nc):
            x0, x1 = xs[c] + 3, xs[c + 1] - 3
            for r in range(nr - 1):
                yb = ys[r + 1]
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
        # drop empty outer rows/columns made by stray rules
        if sum(1 for r in rows for t in r if t) < 2:
            continue
        tables.append(Table(page, "ruled", [float(x), float(y), float(x + cw), float(y + ch)], rows,
                            sorted(cells, key=lambda c: (c.row, c.col))))
    tables.sort(key=lambda t: t.box[1])
    return tables


def find_unruled_tables(lines: list[OcrLine], page: int, exclude: list[list[float]] | None = None,
                        min_rows: int = 3, min_cols: int = 2) -> list[Table]:
    """Tables without rules: runs of rows whose text segments line up in the same columns."""
    def inside(ln: OcrLine) -> bool:
        cx, cy = _centre(ln)
        return any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in exclude or [])

    items = [ln for ln in lines if not ln.vertical and not inside(ln)]
    if len(items) < min_rows * min_cols:
        return []
    ordered = order_lines(items, columns=False)
    rows: list[list[OcrLine]] = []
    for ln in ordered:
        if rows:
            prev = rows[-1][-1]
            top, bot = ln.bounds[1], ln.bounds[3]
            ptop, pbot = prev.bounds[1], prev.bounds[3]
            if min(bot, pbot) - max(top, ptop) > 0.5 * min(bot - top, pbot - ptop) and ln.bounds[0] >= prev.bounds[2]:
                rows[-1].append(ln)
                continue
        rows.append([ln])
    tables: list[Table] = []
    run: list[list[OcrLine]] = []

    def flush() -> None:
        if len(run) >= min_rows:
            t = _grid_from_rows(run, page, min_cols)
            if t is not None:
                tables.append(t)

    for row in rows:
        if len(row) >= min_cols:
            if run:
                heights = [ln.bounds[3] - ln.bounds[1] for ln in run[-1]]
                gap = row[0].bounds[1] - max(ln.bounds[3] for ln in run[-1])
                if gap > 2.5 * max(heights):
                    flush()
                    run = []
            run.append(row)
        else:
            flush()
            run = []
    flush()
    return tables


def _grid_from_rows(rows: list[list[OcrLine]], page: int, min_cols: int) -> Table | None:
    spans = sorted((ln.bounds[0], ln.bounds[2]) for row in rows for ln in row)
    cols: list[list[float]] = []
    for x0, x1 in spans:
        if cols and x0 <= cols[-1][1]:
            cols[-1][1] = max(cols[-1][1], x1)
        else:
            cols.append([x0, x1])
    if len(cols) < min_cols:
        return None
    grid = [["" for _ in cols] for _ in rows]
    cells: list[TableCell] = []
    collisions = 0
    for r, row in enumerate(rows):
        for ln in row:
            cx = _centre(ln)[0]
            c = next((i for i, (a, b) in enumerate(cols) if a <= cx <= b), len(cols) - 1)
            if grid[r][c]:
                collisions += 1
                grid[r][c] += " " + ln.text
            else:
                grid[r][c] = ln.text
            x0, y0, x1, y1 = ln.bounds
            cells.append(TableCell(r, c, ln.text, [x0, y0, x1, y1]))
    filled = sum(1 for row in grid for t in row if t)
    if collisions > len(rows) or filled < 0.6 * len(rows) * len(cols):
        return None
    x0 = min(c[0] for c in cols)
    x1 = max(c[1] for c in cols)
    y0 = min(ln.bounds[1] for ln in rows[0])
    y1 = max(ln.bounds[3] for ln in rows[-1])
    return Table(page, "unruled", [x0, y0, x1, y1], grid, cells)


def find_tables(image: np.ndarray, lines: list[OcrLine], page: int, reader: CellReader | None = None) -> list[Table]:
    """Ruled tables first, then unruled ones among the remaining lines (boxes in `image` pixels)."""
    ruled = find_ruled_tables(image, lines, page, reader)
    return ruled + find_unruled_tables(lines, page, exclude=[t.box for t in ruled])


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

