"""Times in questions (English and Chinese) and in model answers."""

from __future__ import annotations

import pytest

from core.analysis.timeparse import (
    chinese_number,
    find_time_mentions,
    format_timestamp,
    parse_time_reference,
)


@pytest.mark.parametrize(
    "question, start, end",
    [
        ("what happens at 3:15?", 195, 195),
        ("What happens at 1:10:05", 4205, 4205),
        ("at 00:03:15.5 who enters?", 195.5, 195.5),
        ("describe 12 minutes 30 seconds in", 750, 750),
        ("what is on screen at 90 seconds", 90, 90),
        ("around 1h10m?", 4200, 4200),
        ("at 2 min 5 s", 125, 125),
        ("第3分15秒发生了什么", 195, 195),
        ("1小时10分的时候谁在说话", 4200, 4200),
        ("三分十五秒发生了什么", 195, 195),
        ("第10分钟有什么", 600, 600),
        ("30秒时画面里有什么", 30, 30),
        ("what happens between 1:00 and 2:30?", 60, 150),
        ("from 1:00 to 2:00", 60, 120),
        ("summarise 4:00-5:30", 240, 330),
        ("从1分到2分发生了什么", 60, 120),
    ],
)
def test_questions_with_times(question: str, start: float, end: float) -> None:
    ref = parse_time_reference(question, duration=5 * 3600)
    assert ref is not None
    assert (ref.start, ref.end) == (pytest.approx(start), pytest.approx(end))


@pytest.mark.parametrize(
    "question, start, end",
    [
        ("what happens in the last minute?", 540, 600),
        ("the last 30 seconds", 570, 600),
        ("what happens in the first two minutes", 0, 120),
        ("最后一分钟发生了什么", 540, 600),
        ("前30秒有什么", 0, 30),
        ("what happens at the end?", 570, 600),
        ("how does it look at the beginning", 0, 30),
    ],
)
def test_relative_times(question: str, start: float, end: float) -> None:
    ref = parse_time_reference(question, duration=600)
    assert ref is not None and (ref.start, ref.end) == (start, end)


@pytest.mark.parametrize("question", ["when does the door close?", "who is the man in the red coat", "门什么时候关上？"])
def test_questions_without_times(question: str) -> None:
    assert parse_time_reference(question, duration=600) is None


def test_window_around_a_point_is_clamped() -> None:
    ref = parse_time_reference("at 0:05", duration=60)
    assert ref.window(60, radius=10) == (0.0, 15.0)
    ref = parse_time_reference("at 0:58", duration=60)
    assert ref.window(60, radius=10) == (48.0, 60.0)
    far = parse_time_reference("at 10:00", duration=60)  # beyond the video
    lo, hi = far.window(60)
    assert 0 <= lo <= hi <= 60


def test_chinese_numbers() -> None:
    assert [chinese_number(x) for x in ("十五", "三", "二十", "一百二十", "15", "两")] == [15, 3, 20, 120, 15, 2]
    assert chinese_number("abc") is None


def test_format_timestamp() -> None:
    assert format_timestamp(195) == "03:15"
    assert format_timestamp(4205) == "1:10:05"
    assert format_timestamp(320, always_hours=True) == "00:05:20"
    assert format_timestamp(12.5, decimals=1) == "00:12.5"


def test_times_in_answers() -> None:
    answer = ("The door opens at 00:03:15 and closes at <212.5 seconds>. A car passes from 1:02 to 1:10, "
              "and again around 95 seconds. 第3分15秒有人进来。")
    mentions = find_time_mentions(answer)
    assert [(m.start, m.end) for m in mentions] == [(195, None), (212.5, None), (62, 70), (95, None), (195, None)]
    assert answer[mentions[2].offset:].startswith("1:02 to 1:10")


def test_answer_without_times() -> None:
    assert find_time_mentions("A person walks a dog in the park. It is 3 meters long.") == []
