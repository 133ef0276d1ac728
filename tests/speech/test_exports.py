"""SRT, WebVTT, TXT and JSON of a transcript, and SRT / WebVTT read back equal."""

from __future__ import annotations

import json

import pytest

from core.speech.exports import export, parse_srt, parse_vtt, to_json, to_srt, to_txt, to_vtt
from core.speech.types import Segment, Transcript


def _transcript() -> Transcript:
    return Transcript(segments=(Segment(0.5, 2.25, "Hello <b>everyone</b> & welcome."),
                                Segment(65.004, 3725.5, "第三季度的预算增加了。"),
                                Segment(3725.6, 3727.0, "Two lines\n\nwith a blank one between.")),
                      language="en", engine="whisper", model="m", duration_s=3730.0)


def test_srt_has_numbered_cues_with_comma_milliseconds_and_reads_back_equal() -> None:
    t = _transcript()
    srt = to_srt(t)
    assert srt.splitlines()[:3] == ["1", "00:00:00,500 --> 00:00:02,250", "Hello <b>everyone</b> & welcome."]
    assert "2\n00:01:05,004 --> 01:02:05,500\n第三季度的预算增加了。\n" in srt
    back = parse_srt(srt)
    assert [(s.start, s.end) for s in back] == [(0.5, 2.25), (65.004, 3725.5), (3725.6, 3727.0)]
    assert back[1].text == "第三季度的预算增加了。"
    assert back[2].text == "Two lines\nwith a blank one between."  # a blank line would have ended the cue
    assert back[0].text == "Hello everyone & welcome."  # SRT formatting tags are dropped on reading


def test_vtt_escapes_markup_and_reads_back_equal() -> None:
    t = _transcript()
    vtt = to_vtt(t)
    assert vtt.startswith("WEBVTT\nLanguage: en\n\n00:00:00.500 --> 00:00:02.250\n")
    assert "Hello &lt;b&gt;everyone&lt;/b&gt; &amp; welcome." in vtt  # never markup in a player
    back = parse_vtt(vtt)
    assert [(s.start, s.end, s.text) for s in back] == [
        (0.5, 2.25, "Hello <b>everyone</b> & welcome."), (65.004, 3725.5, "第三季度的预算增加了。"),
        (3725.6, 3727.0, "Two lines\nwith a blank one between.")]


def test_vtt_from_elsewhere_with_ids_settings_notes_and_tags() -> None:
    text = ("WEBVTT - a talk\n\nNOTE made by hand\n\nintro\n00:01.000 --> 00:04.500 align:start position:10%\n"
            "<v Ann>Hello <i>there</i></v>\n\n00:00:05.000 --> 00:00:06.000\nA &lt;tag&gt;\n")
    assert [(s.start, s.end, s.text) for s in parse_vtt(text)] == [(1.0, 4.5, "Hello there"), (5.0, 6.0, "A <tag>")]
    with pytest.raises(ValueError, match="not WebVTT"):
        parse_vtt("1\n00:00:01,000 --> 00:00:02,000\nhi\n")


def test_txt_and_json() -> None:
    t = _transcript()
    assert to_txt(t).splitlines() == ["Hello <b>everyone</b> & welcome.", "第三季度的预算增加了。",
                                      "Two lines with a blank one between."]
    assert to_txt(t, timestamps=True).splitlines()[:2] == ["[0:00] Hello <b>everyone</b> & welcome.",
                                                           "[1:05] 第三季度的预算增加了。"]
    assert Transcript.from_dict(json.loads(to_json(t))) == t
    assert export(t, "SRT") == to_srt(t)
    with pytest.raises(ValueError, match="choose one of srt, vtt, txt, json"):
        export(t, "docx")
