"""On-screen text events with the real OCR engine on a video with known text at known times."""

from __future__ import annotations

from core.media import probe_video
from core.media.text import TextParams, parse_timecode, run_text_pass


def test_text_events_merge_consecutive_samples(text_video):
    info = probe_video(text_video)
    result, warnings = run_text_pass(info, TextParams(fps=2.0))
    assert not warnings
    spans = {s["text"].upper(): s for s in result.spans}
    hello = next(v for k, v in spans.items() if "HELLO" in k)
    second = next(v for k, v in spans.items() if "SECOND" in k)
    assert abs(hello["start"] - 1.0) <= 0.5 and abs(hello["end"] - 2.5) <= 0.5
    assert abs(second["start"] - 4.0) <= 0.5 and abs(second["end"] - 5.5) <= 0.5
    assert hello["samples"] >= 3 and len(result.spans) == 2
    # OCR ran only on changed frames: fewer calls than samples
    assert result.ocr_calls < len(result.readings)
    events = result.events()
    assert {e.kind for e in events} == {"text"} and all(e.confidence > 0.6 for e in events)


def test_parse_timecode():
    assert parse_timecode("00:00:05:12", 25) == 5.48
    assert parse_timecode("01:02:03", 25) == 3723
    assert parse_timecode("no time here", 25) is None
