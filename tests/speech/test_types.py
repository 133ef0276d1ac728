"""The Transcript others read: text, the speech around a time, search (CJK too), JSON both ways."""

from __future__ import annotations

import json

import pytest

from core.speech.types import Segment, Transcript, Word, join_words


def _transcript() -> Transcript:
    words = (Word(1.0, 1.4, "The", 0.9), Word(1.4, 1.9, "budget"), Word(1.9, 2.3, "grows."))
    return Transcript(
        segments=(Segment(30.0, 33.5, "第三季度的预算增加了。"),
                  Segment(1.0, 2.3, "The budget grows.", words),
                  Segment(10.0, 14.0, "Ｆｕｌｌ-width LETTERS and the BUDGET again.")),
        language="en", engine="whisper", model="openai/whisper-large-v3-turbo", duration_s=40.0,
        input_hash="ab" * 32, speech_s=8.8, language_probability=0.97, chunks=3, chunks_done=3)


def test_segments_are_in_time_order_and_text_is_one_line_each() -> None:
    t = _transcript()
    assert [s.start for s in t.segments] == [1.0, 10.0, 30.0]
    assert t.text().splitlines() == ["The budget grows.", "Ｆｕｌｌ-width LETTERS and the BUDGET again.",
                                     "第三季度的预算增加了。"]
    assert [w.text for w in t.words] == ["The", "budget", "grows."]


def test_around_gives_the_segments_overlapping_a_stretch_or_a_moment() -> None:
    t = _transcript()
    assert [s.start for s in t.around(12.0, 12.0)] == [10.0]
    assert [s.start for s in t.around(2.0, 29.0)] == [1.0, 10.0]
    assert [s.start for s in t.around(20.0, 25.0)] == []
    assert [s.start for s in t.around(20.0, 25.0, pad_s=5.0)] == [30.0]
    assert t.at(11.0).start == 10.0 and t.at(20.0) is None


def test_search_ignores_case_width_and_spaces_between_cjk_characters() -> None:
    t = _transcript()
    assert [s.start for s in t.search("budget")] == [1.0, 10.0]
    assert [s.start for s in t.search("full-WIDTH")] == [10.0]  # full-width letters folded (NFKC)
    assert [s.start for s in t.search("预算")] == [30.0]
    assert [s.start for s in t.search("预 算 增加")] == [30.0]  # spaced CJK still matches
    assert t.search("") == [] and t.search("   ") == [] and t.search("salary") == []


def test_json_round_trip_is_equal_and_json_safe() -> None:
    t = _transcript()
    text = json.dumps(t.to_dict(), ensure_ascii=False)
    back = Transcript.from_dict(json.loads(text))
    assert back == t
    assert back.words[0].probability == 0.9 and back.language_probability == 0.97


def test_bad_values_are_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match="start must be a finite time"):
        Segment(float("nan"), 1.0, "x")
    with pytest.raises(ValueError, match="not a transcript"):
        Transcript.from_dict({"engine": "x"})
    assert Segment(5.0, 4.0, " x ").end == 5.0 and Segment(5.0, 4.0, " x ").text == "x"


def test_join_words_spaces_words_but_not_cjk_or_punctuation() -> None:
    assert join_words(["hello", ",", "world", "!"]) == "hello, world!"
    assert join_words(["预算", "增加", "了", "。"]) == "预算增加了。"
    assert join_words(["it", "costs", "(", "a", "lot", ")"]) == "it costs ( a lot)"


def test_segments_as_timeline_events() -> None:
    events = _transcript().to_events()
    assert [(e.kind, e.start, e.end) for e in events][:2] == [("speech", 1.0, 2.3), ("speech", 10.0, 14.0)]
    assert events[0].label == "The budget grows." and events[0].detail["words"] == 3
    assert events[0].source == "speech.whisper"
    long = Transcript((Segment(0, 9, "word " * 40),), "en", "pocketsphinx", None, 9.0).to_events()[0]
    assert len(long.label) == 80 and long.label.endswith("…") and long.detail["text"] == ("word " * 40).strip()
