"""Parsing realistic model outputs into events, and every chapter export format."""

from __future__ import annotations

import io
import json

import pytest
import webvtt

from core.analysis.captions import is_runaway, parse_events, parse_seconds
from core.analysis.chapters import Chapter, VideoSummary, export, normalise_chapters, to_youtube


@pytest.mark.parametrize(
    "value, seconds",
    [(12.5, 12.5), ("12.5", 12.5), ("12.5s", 12.5), ("<12.5 seconds>", 12.5), ("01:02.50", 62.5),
     ("1:02:03", 3723), ("00:00:07", 7), ("abc", None), (None, None), (True, None), (float("nan"), None)],
)
def test_parse_seconds(value, seconds) -> None:
    assert parse_seconds(value) == (pytest.approx(seconds) if seconds is not None else None)


def test_fenced_json_with_prose_around() -> None:
    text = ('Sure! Here are the events:\n```json\n[{"start": "00:12.5", "end": "00:20", "description": '
            '"A person opens the door"}, {"start": 21, "end": 25.5, "description": "The car leaves"}]\n```\nDone.')
    parsed = parse_events(text, window=(0, 60))
    assert [(e.start, e.end, e.label) for e in parsed.events] == [
        (12.5, 20.0, "A person opens the door"), (21.0, 25.5, "The car leaves")]
    assert all(e.kind == "vlm" for e in parsed.events) and not parsed.problems


def test_truncated_json_keeps_complete_events() -> None:
    text = '[{"start": 1, "end": 2, "description": "a"}, {"start": 3, "end": 4, "description": "b"}, {"start": 5, "en'
    parsed = parse_events(text, window=(0, 10))
    assert [e.label for e in parsed.events] == ["a", "b"]
    assert parsed.truncated and "cut off" in parsed.problems[0]


def test_out_of_range_times_are_dropped_and_reported() -> None:
    text = json.dumps([{"start": 65, "end": 70, "description": "inside"},
                       {"start": 500, "end": 510, "description": "way after the chunk"},
                       {"start": 119.5, "end": 121, "description": "edge"}])
    parsed = parse_events(text, window=(60, 120))
    assert [e.label for e in parsed.events] == ["inside", "edge"]
    assert parsed.events[1].end == 120  # clamped within tolerance
    assert any("outside the part of the video shown (60.0-120.0 s)" in p for p in parsed.problems)


def test_noise_gives_no_events_with_a_reason() -> None:
    for text in ["", "   ", "和章c视频的�cFFubte<", "[1, 2, 3]", '{"foo": "bar"}']:
        parsed = parse_events(text, window=(0, 10))
        assert parsed.events == []
        assert parsed.empty_message.startswith("No events found")
    assert "no JSON" in parse_events("just words").problems[0]


def test_object_with_events_list_and_alternative_keys() -> None:
    text = '{"events": [{"start_time": "0:05", "end_time": "0:09", "caption": "dog runs"}]}'
    parsed = parse_events(text)
    assert [(e.start, e.end, e.label) for e in parsed.events] == [(5, 9, "dog runs")]


def test_runaway_repetition() -> None:
    assert is_runaway("The door opens. " + "and then " * 30)
    assert is_runaway("ok " + "哈" * 80)
    assert not is_runaway("A person walks in at 3:15, sits down, reads a letter and leaves at 4:02.")


def _summary() -> VideoSummary:
    return VideoSummary(
        duration=3725.0,
        chapters=[Chapter(0, 320, "Intro", "Someone arrives."), Chapter(320, 1800, "The --> experiment", "Work."),
                  Chapter(1800, 3725, "Results\nand end", "Wrap up.")],
        summary="A test video.",
    )


def test_markdown_table_of_contents() -> None:
    md = export(_summary(), "md")
    assert "- [00:00:00] Intro" in md and "- [00:05:20] The --> experiment" in md
    assert "- [00:30:00] Results and end" in md


def test_webvtt_parses_back() -> None:
    vtt = export(_summary(), "vtt")
    cues = webvtt.from_buffer(io.StringIO(vtt)).captions
    assert [(c.start, c.end) for c in cues] == [
        ("00:00:00.000", "00:05:20.000"), ("00:05:20.000", "00:30:00.000"), ("00:30:00.000", "01:02:05.000")]
    assert [c.text for c in cues] == ["Intro", "The → experiment", "Results and end"]


def test_srt_and_json() -> None:
    srt = export(_summary(), "srt")
    assert srt.splitlines()[:3] == ["1", "00:00:00,000 --> 00:05:20,000", "Intro"]
    data = json.loads(export(_summary(), "json"))
    assert data["chapters"][1]["start"] == 320 and data["summary"] == "A test video."
    assert VideoSummary.from_dict(data).chapters[2].title == "Results\nand end"


def test_youtube_format_rules() -> None:
    text, notes = to_youtube(_summary())
    assert text.splitlines() == ["0:00:00 Intro", "0:05:20 The → experiment", "0:30:00 Results and end"]
    assert notes == []
    short = VideoSummary(duration=100, chapters=[Chapter(2, 5, "a"), Chapter(5, 60, "b"), Chapter(60, 100, "c")])
    text, notes = to_youtube(short)
    assert text.splitlines()[0] == "0:00 a" and len(text.splitlines()) == 2  # "b" is 3 s after "a": merged
    assert any("10 s" in n for n in notes) and any("three" in n for n in notes)


def test_normalise_chapters() -> None:
    out = normalise_chapters([Chapter(50, 70, "b"), Chapter(3, 40, "a"), Chapter(90, 500, "c"), Chapter(95, 99, "")],
                             duration=120)
    assert [(c.start, c.end, c.title) for c in out] == [(0, 50, "a"), (50, 90, "b"), (90, 120, "c")]


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="choose one of md, json, vtt, srt, youtube"):
        export(_summary(), "docx")
