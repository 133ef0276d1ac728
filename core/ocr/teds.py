"""TEDS: tree-edit-distance similarity of two tables (Zhong et al., "Image-based table recognition", 2020).

A table is a tree `table -> tr -> td`; a `td` node carries its colspan, rowspan and text. The distance is
the ordered tree edit distance (Zhang-Shasha), with insert and delete costing 1 and a rename costing 1
when the tags or the spans differ, else the normalised Levenshtein distance of the two cells' texts
(0 for structure only). TEDS = 1 - distance / max(nodes of either tree); 1.0 is identical.

`thead`/`tbody` wrappers are dropped (header detection is not what is measured): a table with its header
in `<thead>` and the same table without one have TEDS 1.0. Written for this project (no third-party
code); the forest-distance rows are vectorised with numpy so a 300-cell table takes well under a second.
"""

from __future__ import annotations

import html as _html
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Iterable

import numpy as np

from core.ocr.types import Table


@dataclass
class Node:
    """One node of a table tree: tag (table, tr, td), spans and text of a td, children in order."""

    tag: str
    colspan: int = 1
    rowspan: int = 1
    text: str = ""
    children: list["Node"] = field(default_factory=list)

    def size(self) -> int:
        """Nodes in this subtree."""
        return 1 + sum(c.size() for c in self.children)


def _clean(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def grid_tree(rows: list[list[str]], spans: dict[tuple[int, int], tuple[int, int]] | None = None) -> Node:
    """The tree of a cell grid; `spans` maps (row, col) -> (rowspan, colspan) of spanning cells, whose covered
    positions are left out (as HTML does)."""
    spans = spans or {}
    covered: set[tuple[int, int]] = set()
    for (r, c), (rs, cs) in spans.items():
        covered |= {(i, j) for i in range(r, r + rs) for j in range(c, c + cs)} - {(r, c)}
    root = Node("table")
    for r, row in enumerate(rows):
        tr = Node("tr")
        for c, text in enumerate(row):
            if (r, c) in covered:
                continue
            rs, cs = spans.get((r, c), (1, 1))
            tr.children.append(Node("td", cs, rs, _clean(text)))
        root.children.append(tr)
    return root


def table_tree(table: Table | list[Table]) -> Node:
    """The tree of a found Table (spans from its cells); several tables become one, rows stacked."""
    tables = table if isinstance(table, list) else [table]
    root = Node("table")
    for t in tables:
        spans = {(c.row, c.col): (c.row_span, c.col_span) for c in t.cells if c.row_span > 1 or c.col_span > 1}
        root.children.extend(grid_tree(t.rows, spans).children)
    return root


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root: Node | None = None
        self.row: Node | None = None
        self.cell: Node | None = None
        self.depth = 0  # nested tables are read as text of their cell

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.depth += 1
            if self.root is None:
                self.root = Node("table")
            return
        if self.depth != 1 or self.root is None:
            return
        if tag == "tr":
            self.row = Node("tr")
            self.root.children.append(self.row)
        elif tag in ("td", "th"):
            a = dict(attrs)

            def num(k: str) -> int:
                try:
                    return max(1, int(str(a.get(k) or "1").strip()))
                except ValueError:
                    return 1

            if self.row is None:
                self.row = Node("tr")
                self.root.children.append(self.row)
            self.cell = Node("td", num("colspan"), num("rowspan"))
            self.row.children.append(self.cell)
        elif tag == "br" and self.cell is not None:
            self.cell.text += " "

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.depth -= 1
        elif tag in ("td", "th") and self.cell is not None:
            self.cell.text = _clean(self.cell.text)
            self.cell = None
        elif tag == "tr":
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.text += data


def html_tree(markup: str) -> Node:
    """The tree of the first <table> in HTML markup (thead/tbody dropped, th read as td, inline tags ignored)."""
    p = _TableParser()
    p.feed(markup)
    p.close()
    return p.root or Node("table")


def pubtabnet_tree(structure: Iterable[str], cells: list[list[str]]) -> Node:
    """The tree of a PubTabNet annotation: structure tokens (`<td>`, `<td`, ` colspan="2"`, `>`, `</td>`, ...)
    and each cell's tokens (characters and inline tags such as <b>) in order."""
    parts: list[str] = []
    k = 0
    for tok in structure:
        parts.append(tok)
        if tok in ("<td>", ">"):  # a cell opens: its text follows
            text = "".join(t for t in cells[k] if not (t.startswith("<") and t.endswith(">"))) if k < len(cells) else ""
            parts.append(_html.escape(text))
            k += 1
    return html_tree("<table>" + "".join(parts) + "</table>")


def _levenshtein(a: str, b: str) -> int:
    """Levenshtein distance, bit-parallel over the characters of `a` (Myers 1999 / Hyyro 2001)."""
    if a == b:
        return 0
    if not a or not b:
        return len(a) + len(b)
    m = len(a)
    mask = (1 << m) - 1
    last = 1 << (m - 1)
    peq: dict[str, int] = {}
    for i, ch in enumerate(a):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    pv, mv, score = mask, 0, m
    for ch in b:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        if ph & last:
            score += 1
        elif mh & last:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score


def text_distance(a: str, b: str) -> float:
    """Levenshtein distance normalised by the longer text (0 equal, 1 nothing in common)."""
    if a == b:
        return 0.0
    return _levenshtein(a, b) / max(len(a), len(b))


def _postorder(root: Node) -> tuple[list[Node], list[int]]:
    """Nodes in post-order and, for each, the index of its leftmost leaf."""
    nodes: list[Node] = []
    lml: list[int] = []

    def walk(n: Node) -> int:
        first = -1
        for c in n.children:
            leaf = walk(c)
            if first < 0:
                first = leaf
        nodes.append(n)
        idx = len(nodes) - 1
        lml.append(first if first >= 0 else idx)
        return lml[idx]

    walk(root)
    return nodes, lml


def _rename_costs(a: list[Node], b: list[Node], structure_only: bool) -> np.ndarray:
    cost = np.ones((len(a), len(b)))
    tags_b = np.array([n.tag for n in b])
    memo: dict[tuple[str, str], float] = {}
    for i, x in enumerate(a):
        same = tags_b == x.tag
        if x.tag != "td":
            cost[i, same] = 0.0
            continue
        for j in np.flatnonzero(same):
            y = b[j]
            if (x.colspan, x.rowspan) != (y.colspan, y.rowspan):
                continue
            if structure_only or x.text == y.text:
                cost[i, j] = 0.0
                continue
            key = (x.text, y.text)
            if key not in memo:
                memo[key] = text_distance(x.text, y.text)
            cost[i, j] = memo[key]
    return cost


def _subtree_min(values: np.ndarray, left: np.ndarray) -> np.ndarray:
    """For every node j (post-order), the minimum of values[left[j] .. j] along the last axis (its subtree)."""
    n = values.shape[-1]
    idx = np.empty(2 * n, dtype=np.int64)
    idx[0::2] = left
    idx[1::2] = np.arange(1, n + 1)
    padded = np.concatenate([values, np.full(values.shape[:-1] + (1,), np.inf)], axis=-1)
    return np.minimum.reduceat(padded, idx, axis=-1)[..., 0::2]


def tree_edit_distance(t1: Node, t2: Node, structure_only: bool = False) -> float:
    """Ordered tree edit distance (Zhang-Shasha; unit insert/delete, rename as the module docstring says)."""
    a, la = _postorder(t1)
    b, lb = _postorder(t2)
    n, m = len(a), len(b)
    ren = _rename_costs(a, b, structure_only)
    la_arr, lb_arr = np.array(la), np.array(lb)
    size_a = np.arange(n) - la_arr + 1
    size_b = np.arange(m) - lb_arr + 1
    td = np.zeros((n, m))
    # a leaf against a subtree: map the leaf onto the best node of the subtree and insert the rest
    leaves_a = np.flatnonzero(size_a == 1)
    leaves_b = np.flatnonzero(size_b == 1)
    td[leaves_a, :] = size_b[None, :] - 1 + _subtree_min(ren[leaves_a, :], lb_arr)
    td[:, leaves_b] = (size_a[None, :] - 1 + _subtree_min(ren[:, leaves_b].T, la_arr)).T
    # keyroots: the highest node of each leftmost-leaf value; leaves were done above
    kr1 = sorted({max(i for i in range(n) if la[i] == v) for v in set(la)} - set(leaves_a.tolist()))
    kr2 = sorted({max(j for j in range(m) if lb[j] == v) for v in set(lb)} - set(leaves_b.tolist()))
    for i1 in kr1:
        l1 = la[i1]
        ni = i1 - l1 + 2
        for j1 in kr2:
            l2 = lb[j1]
            nj = j1 - l2 + 2
            js = np.arange(l2, j1 + 1)
            on_path_j = lb_arr[js] == l2
            back = lb_arr[js] - l2
            fd = np.zeros((ni, nj))
            fd[0, :] = np.arange(nj)
            idx = np.arange(nj)
            for x in range(1, ni):
                i = l1 + x - 1
                prev = fd[x - 1]
                sub = fd[la[i] - l1, back] + td[i, js]
                if la[i] == l1:
                    sub = np.where(on_path_j, prev[:-1] + ren[i, js], sub)
                row = fd[x]
                row[0] = prev[0] + 1.0
                np.minimum(prev[1:] + 1.0, sub, out=row[1:])  # delete node i, or match i's subtree
                row[:] = np.minimum.accumulate(row - idx) + idx  # insert nodes (unit cost)
                if la[i] == l1:
                    td[i, js[on_path_j]] = row[1:][on_path_j]
    return float(td[n - 1, m - 1])


def teds(pred: Node, truth: Node, structure_only: bool = False) -> float:
    """Tree-edit-distance similarity in [0, 1] (1.0: the same structure and text)."""
    n = max(pred.size(), truth.size())
    if n <= 1 and not pred.children and not truth.children:
        return 1.0
    return max(0.0, 1.0 - tree_edit_distance(pred, truth, structure_only) / n)


def grid_of(tree: Node) -> tuple[list[list[str]], dict[tuple[int, int], tuple[int, int]]]:
    """The cell grid a tree lays out (spans expanded as in HTML): rows of text and the spans by position."""
    grid: dict[tuple[int, int], str] = {}
    taken: set[tuple[int, int]] = set()
    spans: dict[tuple[int, int], tuple[int, int]] = {}
    for r, tr in enumerate(tree.children):
        c = 0
        for td in tr.children:
            while (r, c) in taken:
                c += 1
            grid[(r, c)] = td.text
            if td.rowspan > 1 or td.colspan > 1:
                spans[(r, c)] = (td.rowspan, td.colspan)
            for i in range(r, r + td.rowspan):
                for j in range(c, c + td.colspan):
                    taken.add((i, j))
            c += td.colspan
    nr = max((r for r, _ in taken), default=-1) + 1
    nc = max((c for _, c in taken), default=-1) + 1
    nr = max(nr, len(tree.children))
    return [[grid.get((r, c), "") for c in range(nc)] for r in range(nr)], spans


def _key(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split()).casefold()


def cell_accuracy(pred: Node, truth: Node) -> tuple[int, int]:
    """(right, total): of the truth's non-empty cells, how many the prediction has at the same row and column
    with the same text (Unicode-normalised, whitespace and case ignored)."""
    pg, _ = grid_of(pred)
    tg, _ = grid_of(truth)
    total = right = 0
    for r, row in enumerate(tg):
        for c, text in enumerate(row):
            if not _key(text):
                continue
            total += 1
            got = pg[r][c] if r < len(pg) and c < len(pg[r]) else ""
            right += _key(got) == _key(text)
    return right, total


def shape_of(tree: Node) -> tuple[int, int]:
    """(rows, columns) of the grid a tree lays out."""
    g, _ = grid_of(tree)
    return len(g), max((len(r) for r in g), default=0)
