"""The timeline's Speech lane: one bar (and diamond) per transcript segment at its times, the words said in the
hover (escaped: a transcript is untrusted text), and a click on it naming the segment, as a click on any lane."""

from __future__ import annotations

import json

from core.analysis.heard import speech_blocks, speech_events
from core.charts.timeline import at, event_for_selection, lane_title, timeline_figure
from core.events import Event
from core.speech.types import Segment, Transcript, Word

from tests.speech_ui.conftest import transcribe_into


def test_the_speech_lane_of_a_real_transcript(speech_video, tmp_path) -> None:
    heard = transcribe_into(tmp_path / "cache", speech_video.path)
    said = speech_events(heard)
    assert [(e.kind, e.start, e.end, e.label) for e in said] == [("speech", s.start, s.end, s.text)
                                                                  for s in heard.segments]
    scene = Event("scene", 0.0, 5.0, "shot 1")
    fig = timeline_figure([scene, *said], speech_video.seconds)
    bars = [t for t in fig.data if t.type == "bar" and t.name == "Speech"]
    assert lane_title("speech") == "Speech" and len(bars) == 1
    [bar] = bars
    assert list(bar.y) == ["Speech"] * len(said)
    assert list(bar.base) == [at(e.start) for e in said]
    assert [round(x) for x in bar.x] == [round((e.end - e.start) * 1000) for e in said]  # each bar spans its segment
    assert [c[0] for c in bar.customdata] == [1, 2]  # the events' indices: a click names the segment
    assert "morning" in bar.hovertext[0] and "presentation" in bar.hovertext[1]
    picked = event_for_selection([scene, *said], {"selection": {"points": [{"customdata": list(bar.customdata[1])}]}})
    assert picked is not None and picked[1] is said[1] and round(picked[1].start) == 6  # the player then seeks there
    assert "Speech" in fig.layout.yaxis.categoryarray


def test_the_hover_shows_the_words_escaped_and_wrapped() -> None:
    text = "<img src=http://x/y.png> " + " ".join(f"word{k}" for k in range(40))
    t = Transcript(segments=(Segment(2.0, 9.0, text, (Word(2.0, 2.5, "<img"),)),), language="en",
                   engine="pocketsphinx", model=None, duration_s=10.0)
    fig = timeline_figure(speech_events(t), 10.0)
    hover = next(tr for tr in fig.data if tr.type == "bar").hovertext[0]
    assert "<img" not in hover and "&lt;img src=http://x/y.png&gt;" in hover
    assert "word39" in hover and hover.count("<br>") >= 4  # every word, in lines of about 70 characters
    assert "0:02.0 – 0:09.0" in hover
    assert "<script" not in json.dumps(fig.to_plotly_json(), default=str)


def test_speech_blocks_for_chapters_join_up_to_a_minute() -> None:
    segs = tuple(Segment(k * 10.0, k * 10.0 + 8.0, f"sentence {k}") for k in range(13))  # two minutes of talk
    blocks = speech_blocks(Transcript(segments=segs, language="en", engine="whisper", model=None, duration_s=130.0))
    assert [(b.start, b.end) for b in blocks] == [(0.0, 58.0), (60.0, 118.0), (120.0, 128.0)]
    assert blocks[0].label == " ".join(f"sentence {k}" for k in range(6)) and blocks[0].detail == {"segments": 6}
    assert speech_blocks(None) == [] and speech_events(None) == []
