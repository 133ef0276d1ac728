"""The timeline figure: one lane per kind, escaped labels, selections map back to events."""

from __future__ import annotations

from core.events import Event
from core.charts.timeline import event_for_selection, events_in_selection, timeline_figure


EVENTS = [Event("scene", 0, 2, "shot 1"), Event("scene", 2, 4, "shot 2"), Event("text", 2.4, 3.5, "<b>x</b> & y"),
          Event("motion", 0, 6, "activity"), Event("answer", 3, 3, "at 0:03", detail={"flag": "far"})]


def test_lanes_hover_and_customdata() -> None:
    fig = timeline_figure(EVENTS, 6.0, thumbnails={0.0: "data:image/jpeg;base64,AA"}, selected=1)
    lanes = list(fig.layout.yaxis.categoryarray)
    assert lanes == ["On-screen text", "Motion", "Scenes (shots)", "Answer times", "Frames"]
    text_trace = next(t for t in fig.data if t.name == "On-screen text" and t.type == "scatter")
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in text_trace.hovertext[0]  # never rendered as HTML
    assert list(text_trace.customdata[0]) == [2, 2.4, 3.5]
    answer = next(t for t in fig.data if t.name == "Answer times" and t.type == "bar")
    assert "doubtful: far" in answer.hovertext[0]
    assert fig.layout.xaxis.rangeslider.visible and fig.layout.xaxis.type == "date"
    assert len(fig.layout.images) == 1 and len(fig.layout.shapes) == 1


def test_selection_maps_back_to_events() -> None:
    sel = {"selection": {"points": [{"customdata": [1, 2.0, 4.0]}, {"customdata": [1, 2.0, 4.0]},
                                    {"customdata": [99, 0, 0]}, {"x": 1}]}}
    assert events_in_selection(sel) == [1, 99]
    assert event_for_selection(EVENTS, sel) == (1, EVENTS[1])
    assert event_for_selection(EVENTS, {"selection": {"points": []}}) is None
    assert event_for_selection(EVENTS, None) is None
