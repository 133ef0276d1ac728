"""Table structure: TEDS itself, and tables rendered here read back with the right grid (spans, unruled rows,
one table not split, a page turned 90 degrees) through the real OCR pipeline (RapidOCR)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.ocr.pipeline import OcrOptions, ocr_image
from core.ocr.tables import find_unruled_tables, group_rows, table_to_html
from core.ocr.teds import cell_accuracy, grid_tree, html_tree, table_tree, teds, tree_edit_distance
from core.ocr.types import OcrLine
from tests.ocr.conftest import font


# ---- TEDS -------------------------------------------------------------------------------------------------------

GRID = [["Item", "Qty"], ["Bolts", "12"]]  # table + 2 tr + 4 td = 7 nodes


def test_teds_of_identical_tables_is_one():
    assert teds(grid_tree(GRID), grid_tree(GRID)) == 1.0
    # the same table written as HTML with a header section and th cells is the same tree
    markup = "<table><thead><tr><th>Item</th><th>Qty</th></tr></thead><tbody><tr><td>Bolts</td><td>12</td></tr>"
    assert teds(html_tree(markup + "</tbody></table>"), grid_tree(GRID)) == 1.0


def test_teds_of_known_edits():
    # one cell's text wholly different: one rename of cost 1 over 7 nodes
    other = grid_tree([["Item", "Qty"], ["Bolts", "xy"]])
    assert tree_edit_distance(grid_tree(GRID), other) == 1.0
    assert teds(other, grid_tree(GRID)) == pytest.approx(1 - 1 / 7)
    # one character of four wrong: rename cost 1/4
    near = grid_tree([["Item", "Qty"], ["Bolte", "12"]])
    assert teds(near, grid_tree(GRID)) == pytest.approx(1 - (1 / 5) / 7)
    assert teds(near, grid_tree(GRID), structure_only=True) == 1.0
    # a row missing: delete one tr and its two td (3 of 7 nodes)
    assert teds(grid_tree(GRID[:1]), grid_tree(GRID)) == pytest.approx(1 - 3 / 7)
    # a spanning cell against two cells: rename (span differs) + delete one td, over 7 nodes
    spanned = grid_tree([["Item", ""], ["Bolts", "12"]], {(0, 0): (1, 2)})
    assert teds(spanned, grid_tree(GRID), structure_only=True) == pytest.approx(1 - 2 / 7)
    assert cell_accuracy(near, grid_tree(GRID)) == (3, 4)


def _forest_distance(a: tuple, b: tuple, structure_only: bool = False) -> float:
    """Tree edit distance by its definition (rightmost roots of two forests), memoised: slow, only for checking."""
    from core.ocr.teds import text_distance

    memo: dict[tuple, float] = {}

    def rename(x, y) -> float:
        if x.tag != y.tag or (x.tag == "td" and (x.colspan, x.rowspan) != (y.colspan, y.rowspan)):
            return 1.0
        return 0.0 if x.tag != "td" or structure_only else text_distance(x.text, y.text)

    def fd(f1: tuple, f2: tuple) -> float:
        if not f1 or not f2:
            return float(sum(n.size() for n in f1 + f2))
        key = (tuple(map(id, f1)), tuple(map(id, f2)))
        if key not in memo:
            x, y = f1[-1], f2[-1]
            memo[key] = min(fd(f1[:-1] + tuple(x.children), f2) + 1, fd(f1, f2[:-1] + tuple(y.children)) + 1,
                            fd(tuple(x.children), tuple(y.children)) + fd(f1[:-1], f2[:-1]) + rename(x, y))
        return memo[key]

    return fd(a, b)


def test_tree_edit_distance_agrees_with_its_definition():
    import random

    from core.ocr.teds import Node

    rng = random.Random(7)

    def tree() -> Node:
        return Node("table", children=[Node("tr", children=[Node("td", rng.choice([1, 1, 2]), 1,
                                                                 rng.choice(["", "a", "ab", "b"]))
                                                            for _ in range(rng.randint(0, 3))])
                                       for _ in range(rng.randint(0, 3))])

    for _ in range(60):
        a, b = tree(), tree()
        assert tree_edit_distance(a, b) == pytest.approx(_forest_distance((a,), (b,)))
        assert tree_edit_distance(a, b, True) == pytest.approx(_forest_distance((a,), (b,), True))


# ---- rendered tables ----------------------------------------------------------------------------------------------

def _ruled_with_spans() -> np.ndarray:
    """Region | Sales (over two columns) / (Region continues) | 2023 | 2024 / North | 120 | 135 / South | 98 | 110."""
    f = font("latin", 26)
    cw, ch, x0, y0 = 190, 60, 40, 40
    img = Image.new("RGB", (x0 * 2 + 3 * cw, y0 * 2 + 4 * ch), "white")
    d = ImageDraw.Draw(img)
    line = dict(fill="black", width=2)
    for r in (0, 2, 3, 4):
        d.line([(x0, y0 + r * ch), (x0 + 3 * cw, y0 + r * ch)], **line)
    d.line([(x0 + cw, y0 + ch), (x0 + 3 * cw, y0 + ch)], **line)  # under "Sales" only: Region spans two rows
    for c in (0, 1, 3):
        d.line([(x0 + c * cw, y0), (x0 + c * cw, y0 + 4 * ch)], **line)
    d.line([(x0 + 2 * cw, y0 + ch), (x0 + 2 * cw, y0 + 4 * ch)], **line)  # not through "Sales": it spans two columns
    d.text((x0 + 14, y0 + ch - 14), "Region", fill="black", font=f)
    d.text((x0 + cw + cw - 40, y0 + 16), "Sales", fill="black", font=f)
    for r, row in enumerate([["2023", "2024"], ["120", "135"], ["98", "110"]], 1):
        for c, t in enumerate(row, 1):
            d.text((x0 + c * cw + 16, y0 + r * ch + 16), t, fill="black", font=f)
    for r, t in ((2, "North"), (3, "South")):
        d.text((x0 + 14, y0 + r * ch + 16), t, fill="black", font=f)
    return np.array(img)


def test_ruled_table_with_spanning_cells():
    page = ocr_image(_ruled_with_spans(), OcrOptions(engine="rapidocr", fields="off"))
    assert len(page.tables) == 1, page.text
    t = page.tables[0]
    assert t.kind == "ruled" and t.shape == (4, 3)
    assert t.rows == [["Region", "Sales", ""], ["", "2023", "2024"], ["North", "120", "135"], ["South", "98", "110"]]
    spans = {(c.row, c.col): (c.row_span, c.col_span) for c in t.cells}
    assert spans[(0, 0)] == (2, 1) and spans[(0, 1)] == (1, 2) and spans[(2, 1)] == (1, 1)
    assert "<td rowspan=\"2\">Region</td>" in table_to_html(t)


UNRULED = [["Part", "Units", "Price"], ["Bolts", "100", "9.99"], ["Nuts", "250", "4.75"],
           ["Imported", "", ""], ["Washers", "500", "2.10"], ["Hinges", "12", "31.40"]]


def _unruled(rows: list[list[str]], jitter: bool = True) -> np.ndarray:
    """Three columns (text left-aligned, numbers right-aligned), one row a label alone; baselines wander a few
    pixels as on a scan, and a title and a paragraph stand above and below the table."""
    f = font("latin", 26)
    img = Image.new("RGB", (760, 200 + 48 * len(rows) + 120), "white")
    d = ImageDraw.Draw(img)
    d.text((40, 40), "Stock count of the workshop, March", fill="black", font=f)
    top = 140
    for r, row in enumerate(rows):
        y = top + r * 48 + ((r * 7) % 5 - 2 if jitter else 0)
        d.text((40, y), row[0], fill="black", font=f)
        for c, t in enumerate(row[1:], 1):
            if t:
                right = 360 + (c - 1) * 200
                d.text((right - f.getbbox(t)[2], y + (2 if jitter and c == 2 else 0)), t, fill="black", font=f)
    d.text((40, top + 48 * len(rows) + 50), "Counted by the evening shift.", fill="black", font=f)
    return np.array(img)


def _check_unruled(tables, rows) -> None:
    assert len(tables) == 1, [t.rows for t in tables]
    t = tables[0]
    assert t.kind == "unruled" and t.shape == (6, 3)
    assert t.rows == rows


def test_unruled_table_of_six_rows_is_one_table_of_six_rows():
    page = ocr_image(_unruled(UNRULED), OcrOptions(engine="rapidocr", fields="off"))
    _check_unruled(page.tables, UNRULED)


def test_unruled_table_on_a_page_turned_90_degrees():
    turned = np.ascontiguousarray(np.rot90(_unruled(UNRULED)))  # counter-clockwise: the text runs upwards
    page = ocr_image(turned, OcrOptions(engine="rapidocr", fields="off"))
    assert page.preprocess.orientation in (90, 270)
    _check_unruled(page.tables, UNRULED)


def _line(text: str, x0: float, y0: float, x1: float, y1: float) -> OcrLine:
    return OcrLine(text, [[x0, y0], [x1, y0], [x1, y1], [x0, y1]], 0.99)


def test_rows_do_not_drift_and_a_centred_label_spans_its_rows():
    # a long row whose boxes step down 3 px each: one row, not three (the row's median is the anchor)
    stepped = [_line(t, 10 + 120 * i, 100 + 3 * i, 90 + 120 * i, 120 + 3 * i) for i, t in enumerate("abcdef")]
    assert [len(r) for r in group_rows(stepped)] == [6]
    # a group label centred beside two rows of figures: one cell spanning both rows
    lines = [_line("Method", 0, 0, 80, 20), _line("Data", 120, 0, 180, 20), _line("Mean", 220, 0, 280, 20),
             _line("Fast", 0, 36, 60, 56), _line("Alpha", 120, 24, 180, 44), _line("5.77", 220, 24, 270, 44),
             _line("Beta", 120, 48, 180, 68), _line("6.30", 220, 48, 270, 68),
             _line("Slow", 0, 84, 60, 104), _line("Alpha", 120, 72, 180, 92), _line("6.97", 220, 72, 270, 92),
             _line("Beta", 120, 96, 180, 116), _line("8.53", 220, 96, 270, 116)]
    [t] = find_unruled_tables(lines, 0)
    assert t.rows == [["Method", "Data", "Mean"], ["Fast", "Alpha", "5.77"], ["", "Beta", "6.30"],
                      ["Slow", "Alpha", "6.97"], ["", "Beta", "8.53"]]
    assert {(c.row, c.col): c.row_span for c in t.cells if c.row_span > 1} == {(1, 0): 2, (3, 0): 2}
    assert teds(table_tree(t), html_tree(
        "<table><tr><td>Method</td><td>Data</td><td>Mean</td></tr>"
        "<tr><td rowspan=2>Fast</td><td>Alpha</td><td>5.77</td></tr><tr><td>Beta</td><td>6.30</td></tr>"
        "<tr><td rowspan=2>Slow</td><td>Alpha</td><td>6.97</td></tr><tr><td>Beta</td><td>8.53</td></tr></table>")) == 1.0
