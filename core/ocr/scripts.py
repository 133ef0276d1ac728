"""Script detection from text, language-hint normalisation and reading order."""

from __future__ import annotations

import unicodedata

from core.ocr.types import OcrError, OcrLine

# language hint -> (script, rapidocr can read it, tesseract pack)
LANGUAGES: dict[str, tuple[str, bool, str]] = {
    "en": ("Latin", True, "eng"),
    "de": ("Latin", True, "deu"),
    "fr": ("Latin", True, "fra"),
    "es": ("Latin", True, "spa"),
    "it": ("Latin", True, "ita"),
    "pt": ("Latin", True, "por"),
    "nl": ("Latin", True, "nld"),
    "latin": ("Latin", True, "eng"),
    "zh": ("Han", True, "chi_sim"),
    "zh-tw": ("Han", True, "chi_tra"),
    "ja": ("Japanese", True, "jpn"),
    "ar": ("Arabic", False, "ara"),
    "fa": ("Arabic", False, "fas"),
    "hi": ("Devanagari", False, "hin"),
    "sa": ("Devanagari", False, "san"),
    "ru": ("Cyrillic", False, "rus"),
    "ko": ("Hangul", False, "kor"),
}
ALIASES = {
    "eng": "en", "english": "en", "deu": "de", "ger": "de", "fra": "fr", "spa": "es", "ita": "it", "por": "pt",
    "ch": "zh", "chi_sim": "zh", "zh-cn": "zh", "zh_cn": "zh", "chinese": "zh", "ch_sim": "zh",
    "chi_tra": "zh-tw", "zh_tw": "zh-tw", "zh-hant": "zh-tw", "ch_tra": "zh-tw", "cht": "zh-tw",
    "jpn": "ja", "japanese": "ja", "jp": "ja",
    "ara": "ar", "arabic": "ar", "fas": "fa", "per": "fa", "persian": "fa",
    "hin": "hi", "hindi": "hi", "san": "sa", "sanskrit": "sa", "rus": "ru", "kor": "ko",
}
# tesseract OSD script names -> language hint
OSD_SCRIPTS = {"Latin": "en", "Han": "zh", "HanS": "zh", "HanT": "zh-tw", "Japanese": "ja", "Katakana": "ja",
               "Hiragana": "ja", "Arabic": "ar", "Devanagari": "hi", "Cyrillic": "ru", "Hangul": "ko"}
CJK_SCRIPTS = {"Han", "Japanese", "Hangul"}
RTL_SCRIPTS = {"Arabic", "Hebrew"}


def normalise_lang(lang: str | None) -> str | None:
    """A known language hint (e.g. "en", "zh", "ar") from user spellings, or several joined by "+"
    for mixed text (e.g. "en+zh" reads English and Chinese together); None for no hint."""
    if lang is None or not str(lang).strip() or str(lang).strip().lower() == "auto":
        return None
    parts: list[str] = []
    for raw in str(lang).replace(",", "+").split("+"):
        key = raw.strip().lower()
        if not key:
            continue
        key = ALIASES.get(key, key)
        if key not in LANGUAGES:
            raise OcrError(f"unknown language {raw.strip()!r}; use one of {', '.join(sorted(LANGUAGES))} (or auto; "
                           "join several with +, e.g. en+zh)")
        if key not in parts:
            parts.append(key)
    return "+".join(parts) or None


def lang_parts(lang: str | None) -> list[str]:
    """The single hints of a (possibly "+"-joined) normalised hint."""
    return [p for p in (lang or "").split("+") if p]


def rapidocr_reads(lang: str | None) -> bool:
    """True when RapidOCR's bundled models read every language of the hint (True for no hint)."""
    return all(LANGUAGES[p][1] for p in lang_parts(lang))


def char_script(ch: str) -> str | None:
    """The script of one character (Latin, Han, Japanese, Hangul, Arabic, Devanagari, Cyrillic...) or None."""
    if not ch.strip() or not ch.isalpha():
        return None
    cp = ord(ch)
    if 0x3040 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF:
        return "Japanese"
    if 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x2FFFF:
        return "Han"
    if 0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF:
        return "Hangul"
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return None
    for script in ("LATIN", "ARABIC", "DEVANAGARI", "CYRILLIC", "GREEK", "HEBREW", "THAI"):
        if name.startswith(script):
            return script.title()
    return None


def detect_script(text: str) -> str:
    """The dominant script of a text ("Japanese" when kana appear among Han); "" when there are no letters."""
    counts: dict[str, int] = {}
    for ch in text:
        s = char_script(ch)
        if s:
            counts[s] = counts.get(s, 0) + 1
    if not counts:
        return ""
    if counts.get("Japanese", 0) and counts.get("Japanese", 0) + counts.get("Han", 0) >= max(counts.values()):
        return "Japanese"
    return max(counts, key=lambda k: counts[k])


def script_language(script: str) -> str:
    """A language hint for a script (the most likely one), "" when unknown."""
    return {"Latin": "en", "Han": "zh", "Japanese": "ja", "Hangul": "ko", "Arabic": "ar",
            "Devanagari": "hi", "Cyrillic": "ru"}.get(script, "")


def _weight(text: str) -> int:
    """Characters of a line, CJK characters counting double (they are about twice as wide)."""
    return sum(2 if char_script(ch) in CJK_SCRIPTS else 1 for ch in text if not ch.isspace())


def _median(vals: list[float]) -> float:
    vals = sorted(vals)
    return vals[len(vals) // 2] if vals else 0.0


def _row_order(lines: list[OcrLine], rtl: bool) -> list[OcrLine]:
    """Rows top to bottom (lines overlapping vertically share a row), each left to right (RTL: right to left)."""
    items = sorted(lines, key=lambda ln: ln.bounds[1])
    rows: list[list[OcrLine]] = []
    for ln in items:
        top, bottom = ln.bounds[1], ln.bounds[3]
        if rows:
            row = rows[-1]
            rtop = min(r.bounds[1] for r in row)
            rbot = max(r.bounds[3] for r in row)
            overlap = min(bottom, rbot) - max(top, rtop)
            if overlap > 0.5 * min(bottom - top, rbot - rtop):
                row.append(ln)
                continue
        rows.append([ln])
    out: list[OcrLine] = []
    for row in rows:
        out.extend(sorted(row, key=lambda ln: -ln.bounds[2] if rtl else ln.bounds[0]))
    return out


def _horizontal_cuts(lines: list[OcrLine], min_gap: float) -> list[list[OcrLine]]:
    """Split into bands at blank horizontal strips at least min_gap high that no line crosses."""
    items = sorted(lines, key=lambda ln: ln.bounds[1])
    bands: list[list[OcrLine]] = [[items[0]]]
    bottom = items[0].bounds[3]
    for ln in items[1:]:
        if ln.bounds[1] - bottom >= min_gap:
            bands.append([ln])
        else:
            bands[-1].append(ln)
        bottom = max(bottom, ln.bounds[3])
    return bands


def _column_cut(lines: list[OcrLine]) -> tuple[list[OcrLine], list[OcrLine], list[OcrLine]] | None:
    """(left, right, straddling) when the lines form two side-by-side columns of running text: a gutter
    that at most a few lines cross (captions, headings), with several long lines on each side. Key-value
    pairs and table cells (short texts) never make a column."""
    n = len(lines)
    if n < 6:
        return None
    allowed = max(2, int(0.12 * n))
    best = None
    for c in sorted({ln.bounds[0] for ln in lines}):
        left = [ln for ln in lines if ln.bounds[2] <= c]
        right = [ln for ln in lines if ln.bounds[0] >= c]
        cross = n - len(left) - len(right)
        if cross > allowed or len(left) < 3 or len(right) < 3:
            continue
        if _median([_weight(ln.text) for ln in left]) < 16 or _median([_weight(ln.text) for ln in right]) < 16:
            continue
        # side by side, not one above the other
        ltop, lbot = min(ln.bounds[1] for ln in left), max(ln.bounds[3] for ln in left)
        rtop, rbot = min(ln.bounds[1] for ln in right), max(ln.bounds[3] for ln in right)
        if min(lbot, rbot) - max(ltop, rtop) < 0.3 * min(lbot - ltop, rbot - rtop):
            continue
        key = (cross, -min(len(left), len(right)))
        if best is None or key < best[0]:
            best = (key, c)
    if best is None:
        return None
    c = best[1]
    left = [ln for ln in lines if ln.bounds[2] <= c]
    right = [ln for ln in lines if ln.bounds[0] >= c]
    ids = {id(ln) for ln in left} | {id(ln) for ln in right}
    return left, right, [ln for ln in lines if id(ln) not in ids]


def _blocks(lines: list[OcrLine], rtl: bool, depth: int = 0) -> list[list[OcrLine]]:
    """Recursive XY-cut: bands at wide blank strips, then columns at gutters; straddling lines
    (captions between columns) are read after the columns they interrupt."""
    if len(lines) < 6 or depth > 6:
        return [lines]
    heights = [ln.bounds[3] - ln.bounds[1] for ln in lines]
    bands = _horizontal_cuts(lines, 1.5 * _median(heights))
    if len(bands) > 1:
        return [b for band in bands for b in _blocks(band, rtl, depth + 1)]
    cut = _column_cut(lines)
    if cut is None:
        return [lines]
    left, right, cross = cut
    first, second = (right, left) if rtl else (left, right)
    top = min(ln.bounds[1] for ln in left + right)
    above = [ln for ln in cross if ln.bounds[3] <= top]  # a heading over both columns comes first
    rest = [ln for ln in cross if ln.bounds[3] > top]
    out = [above] if above else []
    out += _blocks(first, rtl, depth + 1) + _blocks(second, rtl, depth + 1)
    if rest:
        out += _blocks(rest, rtl, depth + 1)
    return out


def order_lines(lines: list[OcrLine], vertical: bool = False, rtl: bool = False,
                columns: bool = True) -> list[OcrLine]:
    """Lines in reading order. Horizontal text: blocks found by a recursive XY-cut (bands split at
    blank strips, text columns split at gutters) read one after another, each block's rows top to
    bottom and left to right (right to left, and right column first, for RTL scripts); columns=False
    keeps plain rows (tables). Vertical text: columns right to left, each top to bottom."""
    if len(lines) < 2:
        return list(lines)
    if vertical:
        return sorted(lines, key=lambda ln: (-(ln.bounds[0] + ln.bounds[2]) / 2, ln.bounds[1]))
    if not columns:
        return _row_order(lines, rtl)
    return [ln for block in _blocks(list(lines), rtl) for ln in _row_order(block, rtl)]


# ---- what an engine read that is not script: direction marks, marks read as lines of their own, stray tokens -----

DIRECTION_MARKS = dict.fromkeys(map(ord, "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))
"""Bidirectional control characters (LRM, RLM, ALM, embeddings, isolates): engines write them around digits in
right-to-left text; they are invisible, never on the page, and break searching and comparing."""

# scripts that a reading in the first script never legitimately contains, unless a hint asks for both
_FOREIGN = {"Arabic": {"Devanagari"}, "Devanagari": {"Arabic"}, "Latin": {"Arabic", "Devanagari"}}


def strip_direction_marks(text: str) -> str:
    """The text without bidirectional control characters."""
    return text.translate(DIRECTION_MARKS)


def _token_scripts(token: str) -> set[str]:
    """Scripts of a token's letters and digits (digits by the block they come from: Devanagari digits are
    Devanagari, Arabic-Indic digits Arabic, ASCII digits none)."""
    out: set[str] = set()
    for ch in token:
        s = char_script(ch)
        if s is None and ch.isdigit() and not ch.isascii():
            name = unicodedata.name(ch, "")
            s = next((x.title() for x in ("DEVANAGARI", "ARABIC", "EXTENDED ARABIC") if name.startswith(x)), None)
            s = "Arabic" if s == "Extended Arabic" else s
        elif s is None and unicodedata.category(ch) == "Mn":
            name = unicodedata.name(ch, "")
            s = "Devanagari" if name.startswith("DEVANAGARI") else "Arabic" if name.startswith("ARABIC") else None
        if s:
            out.add(s)
    return out


def drop_foreign_tokens(text: str, script: str, hint: str | None = None) -> str:
    """Tokens of a script the text's own script never mixes with (Devanagari digits or letters inside Arabic
    text, Arabic inside Devanagari, either inside Latin) removed, when no hint asks for that script too: they are
    noise the engine read into marks, dots or stains."""
    foreign = _FOREIGN.get(script)
    if not foreign or not text:
        return text
    wanted = {LANGUAGES[p][0] for p in lang_parts(hint)}
    foreign = foreign - wanted
    if not foreign:
        return text
    kept = [t for t in text.split(" ") if not (_token_scripts(t) & foreign) or (_token_scripts(t) - foreign)]
    return " ".join(t for t in kept if t)


def _letters(text: str) -> int:
    return sum(1 for ch in text if ch.isalpha() and unicodedata.category(ch) != "Mn")


def merge_mark_lines(lines: list[OcrLine]) -> list[OcrLine]:
    """Horizontal lines without the fragments an engine cut off above or below them: a "line" much lower than
    its neighbours (under half the median height) that overlaps a taller line vertically (or touches it) and
    lies within it horizontally is its dots, harakat or matras; its box joins that line's and its text, when it
    is more than marks, is kept in reading order beside the line's own."""
    if len(lines) < 2:
        return list(lines)
    heights = [ln.bounds[3] - ln.bounds[1] for ln in lines if not ln.vertical]
    if not heights:
        return list(lines)
    med = _median(heights)
    tall = [ln for ln in lines if ln.vertical or ln.bounds[3] - ln.bounds[1] >= 0.5 * med]
    small = [ln for ln in lines if ln not in tall]
    if not tall or not small:
        return list(lines)
    merged: dict[int, list[OcrLine]] = {}
    for s in small:
        sx0, sy0, sx1, sy1 = s.bounds
        best, best_d = None, None
        for i, t in enumerate(tall):
            tx0, ty0, tx1, ty1 = t.bounds
            th = ty1 - ty0
            horiz = min(sx1, tx1) - max(sx0, tx0)
            if t.vertical or horiz < 0.5 * (sx1 - sx0):
                continue
            d = max(0.0, ty0 - sy1, sy0 - ty1)  # vertical distance (0 when they overlap)
            if d <= 0.35 * th and (best_d is None or d < best_d):
                best, best_d = i, d
        if best is not None:
            merged.setdefault(best, []).append(s)
    joined: dict[int, OcrLine] = {}
    for i, t in enumerate(tall):
        parts = merged.get(i)
        if not parts:
            continue
        xs = [p[0] for ln in [t, *parts] for p in ln.box]
        ys = [p[1] for ln in [t, *parts] for p in ln.box]
        box = [[min(xs), min(ys)], [max(xs), min(ys)], [max(xs), max(ys)], [min(xs), max(ys)]]
        text = t.text
        extra = [p for p in parts if _letters(p.text) >= 3 and len(p.text) >= 0.3 * len(t.text)]
        if extra:  # a real piece of the line (the engine split it), not marks: join in reading order
            rtl = detect_script(t.text) in RTL_SCRIPTS
            pieces = sorted([t, *extra], key=lambda ln: -ln.bounds[2] if rtl else ln.bounds[0])
            text = " ".join(p.text for p in pieces)
        n = sum(len(p.text) for p in [t, *extra])
        conf = sum(p.confidence * len(p.text) for p in [t, *extra]) / max(1, n)
        joined[id(t)] = OcrLine(text, box, round(conf, 4), t.vertical)
    gone = {id(p) for parts in merged.values() for p in parts}
    return [joined.get(id(ln), ln) for ln in lines if id(ln) not in gone]
