"""Times in plain language, both ways: questions ("what happens at 3:15?", "第3分15秒发生了什么",
"the last minute") become time windows, and model answers ("at 00:03:15", "<12.5 seconds>",
"from 1:02 to 1:10") become time spans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# -- numbers ------------------------------------------------------------------------------

_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7,
              "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100}
_EN_WORDS = {"one": 1, "a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
             "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40, "forty-five": 45,
             "fifty": 50, "sixty": 60, "half": 0.5}


def chinese_number(text: str) -> float | None:
    """'十五' -> 15, '三' -> 3, '二十' -> 20, '15' -> 15; None when it is not a number."""
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    total, current = 0, 0
    for ch in text:
        if ch in _CN_DIGITS:
            current = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            total += (current or 1) * _CN_UNITS[ch]
            current = 0
        else:
            return None
    return float(total + current)


def format_timestamp(seconds: float, always_hours: bool = False, decimals: int = 0) -> str:
    """Seconds -> 'mm:ss' (or 'h:mm:ss' past an hour; 'hh:mm:ss' when `always_hours`)."""
    if decimals:
        seconds = round(seconds, decimals)
        whole = int(seconds)
        frac = f"{seconds - whole:.{decimals}f}"[1:]
    else:
        whole = int(round(seconds))
        frac = ""
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    if always_hours:
        return f"{h:02d}:{m:02d}:{s:02d}{frac}"
    if h:
        return f"{h}:{m:02d}:{s:02d}{frac}"
    return f"{m:02d}:{s:02d}{frac}"


# -- time references in questions ------------------------------------------------------------

@dataclass(frozen=True)
class TimeReference:
    """A time a question refers to: a point (start == end) or a range, in seconds, and the words that said it."""

    start: float
    end: float
    text: str

    @property
    def is_point(self) -> bool:
        return self.start == self.end

    def window(self, duration: float | None, radius: float = 10.0) -> tuple[float, float]:
        """The stretch of video to sample densely around this reference, clamped to [0, duration]."""
        lo, hi = (self.start - radius, self.end + radius) if self.is_point else (self.start, self.end)
        lo = max(0.0, lo)
        if duration is not None:
            hi = min(duration, hi)
            lo = min(lo, max(0.0, hi - 1.0))
        return lo, max(lo, hi)


_NUM = r"(\d+(?:\.\d+)?)"
_CLOCK = re.compile(r"(?<![\d:.])(?:(\d{1,2}):)?(\d{1,3}):(\d{2}(?:\.\d+)?)(?![\d:])")
_EN_UNIT = re.compile(
    r"(?<![\w.])(?:" + _NUM + r"\s*(?:h|hr|hrs|hours?)(?![a-z])\s*(?:and\s+)?)?"
    r"(?:" + _NUM + r"\s*(?:m|mins?|minutes?)(?![a-z])\s*(?:and\s+)?)?"
    r"(?:" + _NUM + r"\s*(?:s|secs?|seconds?)(?![a-z]))?",
    re.IGNORECASE,
)
_CN_NUM = r"([0-9.]+|[零〇一二两兩三四五六七八九十百]+)"
_CN_UNIT = re.compile(
    r"第?(?:" + _CN_NUM + r"\s*(?:个)?(?:小时|小時|時間|时|時))?\s*"
    r"(?:" + _CN_NUM + r"\s*(?:分钟|分鐘|分)(?!之))?\s*"
    r"(?:" + _CN_NUM + r"\s*秒(?:钟|鐘)?)?"
)
_LAST_FIRST = re.compile(
    r"\b(?:the\s+)?(last|final|first|opening)\s+(?:(\d+(?:\.\d+)?|[a-z-]+)\s+)?(seconds?|minutes?|hours?)\b",
    re.IGNORECASE,
)
_CN_LAST_FIRST = re.compile(r"(最后|最後|最初|开头的?|開頭的?|前|后|後)\s*" + _CN_NUM + r"?\s*(?:个)?(秒钟?|分钟|分鐘|分|小时|小時)")
_END_WORDS = re.compile(r"\b(at|near|towards?)\s+the\s+end\b|\bthe\s+ending\b|结尾|結尾|最后|最後", re.IGNORECASE)
_START_WORDS = re.compile(r"\b(at|near)\s+the\s+(beginning|start)\b|开头|開頭|开始时|一开始", re.IGNORECASE)
_RANGE_WORDS = re.compile(r"\s*(?:-|–|—|~|to|until|till|and|到|至)\s*", re.IGNORECASE)

_UNIT_SECONDS = {"second": 1.0, "seconds": 1.0, "minute": 60.0, "minutes": 60.0, "hour": 3600.0, "hours": 3600.0}


def _clock_seconds(m: re.Match[str]) -> float:
    h = int(m.group(1)) if m.group(1) else 0
    return h * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def _find_points(text: str) -> list[tuple[int, int, float]]:
    """Every absolute time mentioned in `text`: (start index, end index, seconds)."""
    found: list[tuple[int, int, float]] = []
    for m in _CLOCK.finditer(text):
        found.append((m.start(), m.end(), _clock_seconds(m)))
    taken = [(a, b) for a, b, _ in found]

    def free(a: int, b: int) -> bool:
        return all(b <= x or a >= y for x, y in taken)

    for m in _EN_UNIT.finditer(text):
        if not m.group(0).strip() or not any(m.group(i) for i in (1, 2, 3)) or not free(m.start(), m.end()):
            continue
        secs = float(m.group(1) or 0) * 3600 + float(m.group(2) or 0) * 60 + float(m.group(3) or 0)
        found.append((m.start(), m.end(), secs))
        taken.append((m.start(), m.end()))
    for m in _CN_UNIT.finditer(text):
        if not any(m.group(i) for i in (1, 2, 3)) or not free(m.start(), m.end()):
            continue
        parts = [chinese_number(m.group(i)) if m.group(i) else 0.0 for i in (1, 2, 3)]
        if any(p is None for p in parts):
            continue
        h, mi, s = (float(p or 0) for p in parts)
        found.append((m.start(), m.end(), h * 3600 + mi * 60 + s))
        taken.append((m.start(), m.end()))
    return sorted(found)


def _relative(text: str, duration: float | None) -> TimeReference | None:
    m = _LAST_FIRST.search(text)
    if m:
        which, amount, unit = m.group(1).lower(), m.group(2), m.group(3).lower()
        n = 1.0
        if amount:
            n = float(amount) if amount[0].isdigit() else float(_EN_WORDS.get(amount.lower(), 1))
        span = n * _UNIT_SECONDS[unit if unit.endswith("s") else unit + "s"]
        if which in ("last", "final"):
            if duration is None:
                return None
            return TimeReference(max(0.0, duration - span), duration, m.group(0))
        return TimeReference(0.0, span if duration is None else min(span, duration), m.group(0))
    m = _CN_LAST_FIRST.search(text)
    if m:
        which, amount, unit = m.group(1), m.group(2), m.group(3)
        n = chinese_number(amount) if amount else 1.0
        if n is None:
            return None
        scale = 1.0 if unit.startswith("秒") else 3600.0 if unit.startswith(("小时", "小時")) else 60.0
        span = n * scale
        if which in ("最后", "最後", "后", "後"):
            if duration is None:
                return None
            return TimeReference(max(0.0, duration - span), duration, m.group(0))
        return TimeReference(0.0, span if duration is None else min(span, duration), m.group(0))
    if duration is not None and _END_WORDS.search(text):
        return TimeReference(max(0.0, duration - 30.0), duration, _END_WORDS.search(text).group(0))
    if _START_WORDS.search(text):
        end = 30.0 if duration is None else min(30.0, duration)
        return TimeReference(0.0, end, _START_WORDS.search(text).group(0))
    return None


def parse_time_reference(question: str, duration: float | None = None) -> TimeReference | None:
    """The time (point or range) a question refers to, or None.

    Understands clock times ("3:15", "1:10:05", "00:03:15.5"), unit phrases ("12 minutes 30 seconds",
    "1h10m", "90 s"), Chinese ("第3分15秒", "1小时10分", "三分十五秒"), ranges ("from 1:00 to 2:00",
    "1:00-2:00", "从1分到2分"), and relative phrases ("the last minute", "the first 30 seconds",
    "最后一分钟", "at the end").
    """
    relative = _relative(question, duration)
    points = _find_points(question)
    if relative is not None and (not points or _LAST_FIRST.search(question) or _CN_LAST_FIRST.search(question)):
        return relative
    if not points:
        return relative
    a0, a1, first = points[0]
    if len(points) >= 2:
        b0, b1, second = points[1]
        if _RANGE_WORDS.fullmatch(question[a1:b0]):
            lo, hi = sorted((first, second))
            return TimeReference(lo, hi, question[a0:b1])
    return TimeReference(first, first, question[a0:a1])


# -- times in model answers -----------------------------------------------------------------

@dataclass(frozen=True)
class TimeMention:
    """A time (or range) named in an answer, with where it sits in the text."""

    start: float
    end: float | None
    text: str
    offset: int


_TAG = re.compile(r"<\s*(\d+(?:\.\d+)?)\s*seconds?\s*>", re.IGNORECASE)
_SECONDS = re.compile(r"(?<![\w.:])(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?|秒)(?![\w])", re.IGNORECASE)


def find_time_mentions(answer: str) -> list[TimeMention]:
    """Times named in a model answer: clock times, `<t seconds>` tags, "12.5 seconds", Chinese forms,
    and ranges between two of them ("from 1:02 to 1:10", "1:02-1:10")."""
    points: list[tuple[int, int, float]] = []
    for m in _TAG.finditer(answer):
        points.append((m.start(), m.end(), float(m.group(1))))
    for m in _CLOCK.finditer(answer):
        points.append((m.start(), m.end(), _clock_seconds(m)))
    taken = [(a, b) for a, b, _ in points]
    for a, b, secs in _find_points(answer):
        if all(b <= x or a >= y for x, y in taken):
            points.append((a, b, secs))
            taken.append((a, b))
    points.sort()
    mentions: list[TimeMention] = []
    i = 0
    while i < len(points):
        a0, a1, t0 = points[i]
        if i + 1 < len(points):
            b0, b1, t1 = points[i + 1]
            between = answer[a1:b0]
            if _RANGE_WORDS.fullmatch(between) and t1 >= t0:
                mentions.append(TimeMention(t0, t1, answer[a0:b1], a0))
                i += 2
                continue
        mentions.append(TimeMention(t0, None, answer[a0:a1], a0))
        i += 1
    return mentions
