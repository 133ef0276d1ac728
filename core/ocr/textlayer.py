"""PDF text layers read as lines and words in reading order, from PDFium's character boxes.

PDFium's own text rectangles follow the PDF's text objects, and many real PDFs draw every glyph as an
object of its own (one invoice gave 972 "lines" of one character each). Here every character is placed
by its box instead: characters are mapped into the rendered page's pixels (the page's /Rotate applied,
exactly as PDFium renders it), grouped by the direction their text runs, joined into rows by their
vertical overlap, and cut into words at gaps (and PDFium's word breaks) and into separate lines at wide
gaps (table cells and columns stay apart).

A layer is rejected when it is garbage: most lines one character long, words without spaces, glyphs
without a Unicode mapping (or mapped to private-use code points), or mostly symbols. The caller then
reads the page with OCR and tells the user why (`TextLayer.warning`).
"""

from __future__ import annotations

import ctypes
import math
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from core.ocr.types import OcrLine

ONE_CHAR_SHARE_MAX = 0.5  # more lines than this of a single character: glyphs were not joined
UNMAPPED_SHARE_MAX = 0.05  # more characters than this without a Unicode value: the font hides the text
LONG_WORD = 25  # alphabetic "words" this long (or longer) mean the layer has no spaces
LONG_WORD_SHARE_MAX = 0.5
SYMBOL_SHARE_MAX = 0.3  # more characters than this that are neither letters, digits nor punctuation
MIN_CHARS = 10  # fewer characters than this: no text layer at all (a scan)


@dataclass
class TextChar:
    """One character of the layer: display-pixel box (left, top, right, bottom), reading-frame box."""

    ch: str
    index: int  # position in PDFium's character stream
    box: tuple[float, float, float, float]
    frame: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    turn: int = 0  # degrees clockwise the text runs on the rendered page (0 = left to right)


@dataclass
class TextLayer:
    """A page's text layer: lines and words in reading order (boxes in rendered-page pixels), its
    quality figures and, when it is garbage, the problems found (then `usable` is False)."""

    lines: list[OcrLine] = field(default_factory=list)
    words: list[OcrLine] = field(default_factory=list)
    chars: int = 0
    unmapped: int = 0
    turn: int = 0  # the direction most of the text runs (degrees clockwise on the rendered page)
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """True when the layer holds real text worth using instead of OCR."""
        return self.chars >= MIN_CHARS and not self.problems

    @property
    def warning(self) -> str:
        """The page warning a user reads when the layer is rejected ("" when it is used or absent)."""
        if self.chars + self.unmapped < MIN_CHARS or not self.problems:
            return ""
        return ("this page's PDF text layer is unusable (" + "; ".join(self.problems) +
                "): the page was read with OCR instead")

    def stats(self) -> dict[str, Any]:
        """Lines, one-character lines and their share, characters, unmapped characters, direction."""
        return quality(self.lines) | {"chars": self.chars, "unmapped": self.unmapped, "turn": self.turn,
                                      "usable": self.usable}


def quality(lines: list[OcrLine]) -> dict[str, Any]:
    """Text-layer quality figures of a list of lines: lines, one-character lines and their share."""
    n = len(lines)
    one = sum(1 for ln in lines if len(ln.text.strip()) == 1)
    return {"lines": n, "one_char_lines": one, "one_char_share": round(one / n, 3) if n else 0.0}


# --- characters ------------------------------------------------------------------------------------

def _affine(page: Any, scale: float, rotation: int) -> tuple[float, float, float, float, float, float]:
    """(a, b, c, d, e, f) mapping page user space (x, y) to rendered pixels: X = a x + c y + e, Y = b x + d y + f,
    as PDFium renders the page at `scale` with `rotation` more degrees clockwise (its /Rotate included)."""
    import pypdfium2.raw as raw

    k = 16.0  # PDFium answers in whole device pixels: map onto a 16x larger canvas, then divide
    w, h = page.get_size()
    if rotation in (90, 270):
        w, h = h, w
    size_x, size_y = int(math.ceil(w * scale * k)), int(math.ceil(h * scale * k))
    rot = {0: 0, 90: 1, 180: 2, 270: 3}[rotation]
    left, bottom, right, top = page.get_bbox()
    pts = [(left, bottom), (left + 100.0, bottom), (left, bottom + 100.0)]
    out = []
    for x, y in pts:
        dx, dy = ctypes.c_int(), ctypes.c_int()
        raw.FPDF_PageToDevice(page.raw, 0, 0, size_x, size_y, rot, ctypes.c_double(x), ctypes.c_double(y),
                              ctypes.byref(dx), ctypes.byref(dy))
        out.append((dx.value / k, dy.value / k))
    (x0, y0), (x1, y1), (x2, y2) = out
    a, b = (x1 - x0) / 100.0, (y1 - y0) / 100.0
    c, d = (x2 - x0) / 100.0, (y2 - y0) / 100.0
    return a, b, c, d, x0 - a * left - c * bottom, y0 - b * left - d * bottom


def _unmapped(code: int) -> bool:
    if code in (0, 0xFFFD, 0xFFFE, 0xFFFF):
        return True
    if 0xE000 <= code <= 0xF8FF or code >= 0xF0000:
        return True  # private use: the font's own glyph numbers, not text
    cat = unicodedata.category(chr(code))
    return cat in ("Cc", "Cs", "Co", "Cn") and chr(code) not in "\t\r\n"


def page_chars(textpage: Any, page: Any, scale: float, rotation: int = 0) -> tuple[list[TextChar], int]:
    """The characters of a page with their boxes in rendered pixels, and how many had no Unicode value
    (those are left out). Generated characters (PDFium's own spaces and line ends) are kept as breaks with
    an empty box."""
    import pypdfium2.raw as raw

    a, b, c, d, e, f = _affine(page, scale, rotation)
    out: list[TextChar] = []
    unmapped = 0
    matrix = raw.FS_MATRIX()
    for i in range(textpage.count_chars()):
        code = raw.FPDFText_GetUnicode(textpage, i)
        generated = raw.FPDFText_IsGenerated(textpage, i) == 1
        if generated or chr(code) in " \t\r\n\u00a0":
            out.append(TextChar(" " if chr(code) in " \t\u00a0" else "\n", i, (0.0, 0.0, 0.0, 0.0)))
            continue
        if raw.FPDFText_HasUnicodeMapError(textpage, i) == 1 or _unmapped(code):
            unmapped += 1
            continue
        try:
            tl, tb, tr, tt = textpage.get_charbox(i)
            ll, lb, lr, lt = textpage.get_charbox(i, loose=True)
        except Exception:  # noqa: BLE001 - a character PDFium cannot place is left out
            continue
        # direction the text runs: the character's text matrix (x axis), in rendered pixels
        turn, along_x = 0, True
        if raw.FPDFText_GetMatrix(textpage, i, ctypes.byref(matrix)):
            along_x = abs(matrix.a) >= abs(matrix.b)  # the text runs along the page's own x axis
            vx, vy = a * matrix.a + c * matrix.b, b * matrix.a + d * matrix.b
            if abs(vx) + abs(vy) > 0:
                turn = int(round(math.degrees(math.atan2(vy, vx)) / 90.0)) % 4 * 90
        # the loose box gives a line's height (the font's ascent and descent), the tight box its extent
        if tr - tl <= 0 and tt - tb <= 0:
            tl, tb, tr, tt = ll, lb, lr, lt
        if along_x:
            xs_page, ys_page = (tl, tr), (lb, lt)
        else:
            xs_page, ys_page = (ll, lr), (tb, tt)
        corners = [(x, y) for x in xs_page for y in ys_page]
        xs = [a * x + c * y + e for x, y in corners]
        ys = [b * x + d * y + f for x, y in corners]
        box = (min(xs), min(ys), max(xs), max(ys))
        ch = unicodedata.normalize("NFKC", chr(code)) if 0xFB00 <= code <= 0xFB06 else chr(code)  # ligatures
        out.append(TextChar(ch, i, box, turn=turn))
    return out, unmapped


# --- grouping ----------------------------------------------------------------------------------------

def _to_frame(box: tuple[float, float, float, float], turn: int) -> tuple[float, float, float, float]:
    """The box seen with its text upright (rotated back by `turn` degrees)."""
    x0, y0, x1, y1 = box
    if turn == 90:
        return y0, -x1, y1, -x0
    if turn == 180:
        return -x1, -y1, -x0, -y0
    if turn == 270:
        return -y1, x0, -y0, x1
    return box


def _from_frame(fb: tuple[float, float, float, float], turn: int) -> list[list[float]]:
    """A reading-frame box back on the page, as a polygon starting at the text's top-left corner."""
    x0, y0, x1, y1 = fb
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if turn == 90:
        pts = [(-y, x) for x, y in corners]
    elif turn == 180:
        pts = [(-x, -y) for x, y in corners]
    elif turn == 270:
        pts = [(y, -x) for x, y in corners]
    else:
        pts = corners
    return [[round(px, 2), round(py, 2)] for px, py in pts]


def _median(vals: list[float]) -> float:
    s = sorted(vals)
    return s[len(s) // 2] if s else 0.0


def _rows(chars: list[TextChar]) -> list[list[TextChar]]:
    """Characters (one direction, reading-frame boxes) grouped into rows: a character joins a row whose band it
    overlaps by half its height, when the two are of comparable size (a large heading beside two small lines
    of an address block is a row of its own, not a band that swallows both)."""
    rows: list[list[TextChar]] = []
    bands: list[tuple[float, float]] = []
    for ch in sorted(chars, key=lambda c: ((c.frame[1] + c.frame[3]) / 2, c.frame[0])):
        top, bot = ch.frame[1], ch.frame[3]
        h = max(bot - top, 1e-6)
        placed = False
        for k in range(len(rows) - 1, max(-1, len(rows) - 6), -1):
            btop, bbot = bands[k]
            bh = max(bbot - btop, 1e-6)
            overlap = min(bot, bbot) - max(top, btop)
            if overlap >= 0.5 * min(h, bh) and (min(h, bh) >= 0.6 * max(h, bh) or overlap >= 0.8 * max(h, bh)):
                rows[k].append(ch)
                tops, bots = sorted(c.frame[1] for c in rows[k]), sorted(c.frame[3] for c in rows[k])
                bands[k] = (tops[len(tops) // 2], bots[len(bots) // 2])
                placed = True
                break
        if not placed:
            rows.append([ch])
            bands.append((top, bot))
    return rows


def _runs(row: list[TextChar], by_index: dict[int, int], height: float) -> list[list[TextChar]]:
    """A row's characters as runs: stretches that follow each other in the PDF's stream and move forward,
    ordered by where they start. Inside a run the stream order holds even where boxes overlap (a font
    substituted wider than the PDF's own); runs drawn out of order are put in place by position."""
    runs: list[list[TextChar]] = []
    for ch in sorted(row, key=lambda c: by_index[c.index]):
        last = runs[-1][-1] if runs else None
        if last is not None and by_index[ch.index] == by_index[last.index] + 1 and \
                ch.frame[0] >= last.frame[0] - 0.3 * height:
            runs[-1].append(ch)
        else:
            runs.append([ch])
    return sorted(runs, key=lambda r: (r[0].frame[0], by_index[r[0].index]))


def _segments(row: list[TextChar], spaces: set[int], by_index: dict[int, int]) -> list[list[list[TextChar]]]:
    """A row cut into lines (at wide gaps) of words (at spaces and word gaps), left to right. `spaces` are the
    stream positions of spaces (the PDF's or PDFium's); a line end PDFium put between two glyphs of one row is
    no break: it only says the glyphs were separate objects, and their gap decides."""
    height = _median([c.frame[3] - c.frame[1] for c in row]) or 1.0
    runs = _runs(row, by_index, height)
    pitches = [b.frame[0] - a.frame[0] for r in runs for a, b in zip(r, r[1:]) if b.frame[0] > a.frame[0]]
    pitch = _median(pitches) or 0.5 * height
    lines: list[list[list[TextChar]]] = [[[runs[0][0]]]]
    prev, right = runs[0][0], runs[0][0].frame[2]
    for r, run in enumerate(runs):
        for j, ch in enumerate(run):
            if r == 0 and j == 0:
                continue
            same_run = j > 0
            gap = ch.frame[0] - (prev.frame[2] if same_run else right)
            if gap > max(1.2 * height, 2.5 * pitch):
                lines.append([[ch]])
                right = ch.frame[2]
            else:
                if same_run:  # neighbours in the stream: PDFium's spaces decide, a wide gap all the same
                    word_break = any(i in spaces for i in range(prev.index + 1, ch.index)) or \
                        gap > max(pitch, 0.5 * height)
                else:  # separate runs: a gap, or boxes overlapping (two objects drawn over each other)
                    word_break = gap > max(0.35 * pitch, 0.18 * height) or gap < -0.05 * height
                if word_break:
                    lines[-1].append([ch])
                else:
                    lines[-1][-1].append(ch)
            prev, right = ch, max(right, ch.frame[2])
    return lines


def _box(chars: list[TextChar]) -> tuple[float, float, float, float]:
    return (min(c.frame[0] for c in chars), min(c.frame[1] for c in chars),
            max(c.frame[2] for c in chars), max(c.frame[3] for c in chars))


def group(chars: list[TextChar]) -> tuple[list[OcrLine], list[OcrLine]]:
    """(lines, words) from placed characters; boxes are polygons in rendered-page pixels."""
    from core.ocr.scripts import order_lines

    spaces = {c.index for c in chars if c.ch == " "}
    placed = [c for c in chars if c.ch not in (" ", "\n")]
    # stream neighbours: positions among the placed characters (breaks in between are looked up apart)
    by_index = {c.index: k for k, c in enumerate(placed)}
    lines: list[OcrLine] = []
    words_of: dict[int, list[OcrLine]] = {}
    for turn in (0, 90, 180, 270):
        same = [c for c in placed if c.turn == turn]
        for c in same:
            c.frame = _to_frame(c.box, turn)
        for row in _rows(same):
            for seg in _segments(row, spaces, by_index):
                text = " ".join("".join(c.ch for c in w) for w in seg)
                line_chars = [c for w in seg for c in w]
                line = OcrLine(text, _from_frame(_box(line_chars), turn), 1.0)
                lines.append(line)
                words_of[id(line)] = [OcrLine("".join(c.ch for c in w), _from_frame(_box(w), turn), 1.0) for w in seg]
    ordered = order_lines(lines)
    return ordered, [w for ln in ordered for w in words_of[id(ln)]]  # words in their lines' reading order


# --- quality -----------------------------------------------------------------------------------------

def problems(lines: list[OcrLine], words: list[OcrLine], chars: int, unmapped: int) -> list[str]:
    """Why a layer is garbage (empty when it reads as real text)."""
    out: list[str] = []
    if chars + unmapped < MIN_CHARS:
        return out
    if unmapped >= 5 and unmapped > UNMAPPED_SHARE_MAX * (chars + unmapped):
        out.append(f"{unmapped} of {chars + unmapped} characters have no Unicode mapping: the font hides "
                   "what they are")
    q = quality(lines)
    if q["lines"] >= 8 and q["one_char_share"] > ONE_CHAR_SHARE_MAX:
        out.append(f"{q['one_char_lines']} of {q['lines']} lines are a single character")
    alpha = [w.text for w in words if sum(ch.isalpha() and ord(ch) < 0x2E80 for ch in w.text) > 0.8 * len(w.text)]
    letters = sum(len(w) for w in alpha)
    if letters >= 60 and sum(len(w) for w in alpha if len(w) >= LONG_WORD) > LONG_WORD_SHARE_MAX * letters:
        out.append("its words have no spaces between them")
    text = "".join(ln.text for ln in lines).replace(" ", "")
    if len(text) >= 20:
        symbols = sum(1 for ch in text if unicodedata.category(ch)[0] in "SC")
        if symbols > SYMBOL_SHARE_MAX * len(text):
            out.append(f"{symbols} of {len(text)} characters are symbols, not letters or digits")
    return out


def read_layer(page: Any, scale: float, rotation: int = 0) -> TextLayer:
    """The text layer of a pypdfium2 page at `scale` pixels a point, the page rendered `rotation` more
    degrees clockwise (0, 90, 180, 270)."""
    textpage = page.get_textpage()
    try:
        chars, unmapped = page_chars(textpage, page, scale, rotation)
    finally:
        textpage.close()
    lines, words = group(chars)
    placed = [c for c in chars if c.ch not in (" ", "\n")]
    layer = TextLayer(lines, words, len(placed), unmapped)
    if placed:
        counts = {t: sum(1 for c in placed if c.turn == t) for t in (0, 90, 180, 270)}
        best = max(counts, key=lambda t: counts[t])
        layer.turn = best if counts[best] >= 0.6 * len(placed) else 0
    layer.problems = problems(lines, words, len(placed), unmapped)
    return layer
