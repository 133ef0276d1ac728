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
    """A known language hint (e.g. "en", "zh", "ar") from user spellings; None for no hint."""
    if lang is None or not str(lang).strip() or str(lang).strip().lower() == "auto":
        return None
    key = str(lang).strip().lower()
    key = ALIASES.get(key, key)
    if key not in LANGUAGES:
        raise OcrError(f"unknown language {lang!r}; use one of {', '.join(sorted(LANGUAGES))} (or auto)")
    return key


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


def order_lines(lines: list[OcrLine], vertical: bool = False, rtl: bool = False) -> list[OcrLine]:
    """Lines in reading order: rows top to bottom (left to right, or right to left for RTL scripts);
    vertical columns right to left, each top to bottom."""
    if len(lines) < 2:
        return list(lines)
    if vertical:
        return sorted(lines, key=lambda ln: (-(ln.bounds[0] + ln.bounds[2]) / 2, ln.bounds[1]))
    items = sorted(lines, key=lambda ln: ln.bounds[1])
    rows: list[list[OcrLine]] = []
    for ln in items:
        top, bottom = ln.bounds[1], ln.bounds[3]
        placed = False
        if rows:
            row = rows[-1]
            rtop = min(r.bounds[1] for r in row)
            rbot = max(r.bounds[3] for r in row)
            overlap = min(bottom, rbot) - max(top, rtop)
            if overlap > 0.5 * min(bottom - top, rbot - rtop):
                row.append(ln)
                placed = True
        if not placed:
            rows.append([ln])
    out: list[OcrLine] = []
    for row in rows:
        out.extend(sorted(row, key=lambda ln: -ln.bounds[2] if rtl else ln.bounds[0]))
    return out
