"""The video timeline: one lane per event kind on a time axis with a range slider.

    fig = timeline_figure(events, duration=95.0, thumbnails={0.0: "data:image/jpeg;base64,..."})
    st.plotly_chart(fig, on_select="rerun")  # selected points carry customdata [event index, start s, end s]
    event_for_selection(events, selection)   # -> the Event the user picked

Each event is a bar (its span) plus a marker at its start: both carry the event's index in
`customdata`, so a click or a box selection maps back to the event. Speech (`speech` events, one per transcript
segment: core.analysis.heard.speech_events) is a lane of its own whose hover shows the words said. The axis is a
clock (h:mm:ss) that zooms down to the second; labels are escaped (plotly renders a few HTML tags in hover text,
and OCR or model text must never be rendered as HTML).
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Sequence

import plotly.graph_objects as go

from core.events import Event

KIND_LANES: dict[str, tuple[str, str]] = {
    # kind: (lane title, colour)
    "chapter": ("Chapters (model)", "#8c564b"),
    "caption": ("Captions (model)", "#9467bd"),
    "vlm": ("Model events", "#9467bd"),
    "answer": ("Answer times", "#d62728"),
    "speech": ("Speech", "#e377c2"),
    "scene": ("Scenes (shots)", "#1f77b4"),
    "fade": ("Fades", "#17becf"),
    "motion": ("Motion", "#ff7f0e"),
    "static": ("Still stretches", "#7f7f7f"),
    "text": ("On-screen text", "#2ca02c"),
}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MIN_BAR_S = 0.2


def lane_title(kind: str) -> str:
    """The lane a kind of event is drawn in."""
    return KIND_LANES.get(kind, (kind.capitalize(), "#444444"))[0]


def at(seconds: float) -> datetime:
    """A time in the video as a point on the chart's clock axis (0 s = 00:00:00)."""
    return (EPOCH + timedelta(seconds=float(seconds))).replace(tzinfo=None)


def clock(seconds: float) -> str:
    """h:mm:ss.s (or m:ss.s under an hour) for hover text."""
    seconds = max(0.0, float(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{int(h)}:{int(m):02d}:{s:04.1f}" if h else f"{int(m)}:{s:04.1f}"


SPEECH_HOVER_CHARS = 400
"""The words of a speech segment shown when hovering over it (a long one is cut there)."""
HOVER_LINE_CHARS = 70


def _hover_label(event: Event, limit: int = 120) -> str:
    text = " ".join((event.label or event.kind).split())
    if event.kind == "speech":
        return _wrapped(text, SPEECH_HOVER_CHARS)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=False)


def _wrapped(text: str, limit: int, width: int = HOVER_LINE_CHARS) -> str:
    """`text` escaped, cut at `limit` characters and broken into lines of about `width` (a hover box stays narrow)."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(html.escape(line, quote=False) for line in lines)


def _note(event: Event) -> str:
    if event.kind == "speech":
        words = (event.detail or {}).get("words")
        return f"<br><i>heard: {int(words)} words</i>" if isinstance(words, (int, float)) and words else ""
    flag = (event.detail or {}).get("flag")
    if flag:
        return "<br><i>doubtful: " + html.escape(str(flag), quote=False) + "</i>"
    if event.confidence is not None:
        return f"<br>confidence {event.confidence:.2f}"
    return ""


def timeline_figure(events: Sequence[Event], duration: float, thumbnails: Mapping[float, str] | None = None,
                    selected: int | None = None, height: int | None = None) -> go.Figure:
    """The timeline of `events` over [0, duration] s; `thumbnails` {time s: image URI} form a "Frames" lane of
    pictures; `selected` (an index into `events`) is marked with a vertical line."""
    kinds = [k for k in KIND_LANES if any(e.kind == k for e in events)]
    kinds += sorted({e.kind for e in events} - set(kinds))
    lanes = [lane_title(k) for k in kinds]
    if thumbnails:
        lanes = ["Frames", *lanes]
    fig = go.Figure()
    for kind in kinds:
        idx = [i for i, e in enumerate(events) if e.kind == kind]
        if not idx:
            continue
        lane = lane_title(kind)
        colour = KIND_LANES.get(kind, ("", "#444444"))[1]
        custom = [[i, events[i].start, events[i].end] for i in idx]
        hover = [f"<b>{_hover_label(events[i])}</b><br>{clock(events[i].start)} – {clock(events[i].end)}"
                 f"{_note(events[i])}" for i in idx]
        fig.add_trace(go.Bar(
            name=lane, orientation="h", y=[lane] * len(idx),
            base=[at(events[i].start) for i in idx],
            x=[max(events[i].end - events[i].start, MIN_BAR_S) * 1000 for i in idx],
            customdata=custom, hovertext=hover, hovertemplate="%{hovertext}<extra></extra>",
            marker=dict(color=colour, opacity=0.55, line=dict(color=colour, width=1)), showlegend=False,
        ))
        fig.add_trace(go.Scatter(
            name=lane, mode="markers", y=[lane] * len(idx), x=[at(events[i].start) for i in idx],
            customdata=custom, hovertext=hover, hovertemplate="%{hovertext}<extra></extra>",
            marker=dict(color=colour, size=11, symbol="diamond", line=dict(color="white", width=1)), showlegend=False,
        ))
    if thumbnails:
        times = sorted(thumbnails)
        fig.add_trace(go.Scatter(x=[at(t) for t in times], y=["Frames"] * len(times), mode="markers",
                                 marker=dict(size=1, opacity=0), hoverinfo="skip", showlegend=False))
        span = max(duration, 1e-3)
        width_s = max(span / max(len(times), 1) * 0.9, MIN_BAR_S)
        for t in times:
            fig.add_layout_image(dict(source=thumbnails[t], xref="x", yref="y", x=at(t), y="Frames",
                                      sizex=width_s * 1000, sizey=0.9, xanchor="left", yanchor="middle",
                                      sizing="contain", layer="above"))
    if selected is not None and 0 <= selected < len(events):
        fig.add_vline(x=at(events[selected].start).timestamp() * 1000, line=dict(color="#d62728", width=2, dash="dot"))
    end = at(max(duration, 1.0))
    fig.update_layout(
        barmode="overlay", height=height or (120 + 46 * max(1, len(lanes))),
        margin=dict(l=10, r=10, t=30, b=10), dragmode="zoom", clickmode="event+select",
        hoverlabel=dict(align="left"), uirevision="timeline",
    )
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(lanes)), type="category", fixedrange=True)
    fig.update_xaxes(type="date", range=[at(0), end], tickformat="%H:%M:%S", hoverformat="%H:%M:%S.%L",
                     rangeslider=dict(visible=True, thickness=0.08), title_text="time in the video (h:mm:ss)",
                     minallowed=at(0), maxallowed=end)
    return fig


def events_in_selection(selection: Any) -> list[int]:
    """Event indices named by a `st.plotly_chart(on_select=...)` selection (its points' customdata), in order."""
    if selection is None:
        return []
    sel = selection.get("selection", selection) if isinstance(selection, Mapping) else getattr(selection, "selection",
                                                                                                 None)
    points: Iterable[Any] = []
    if isinstance(sel, Mapping):
        points = sel.get("points", []) or []
    elif sel is not None:
        points = getattr(sel, "points", []) or []
    found: list[int] = []
    for p in points:
        custom = p.get("customdata") if isinstance(p, Mapping) else None
        if isinstance(custom, (list, tuple)) and custom:
            try:
                i = int(custom[0])
            except (TypeError, ValueError):
                continue
            if i not in found:
                found.append(i)
    return found


def event_for_selection(events: Sequence[Event], selection: Any) -> tuple[int, Event] | None:
    """The first selected event (index, Event), or None when nothing valid is selected."""
    for i in events_in_selection(selection):
        if 0 <= i < len(events):
            return i, events[i]
    return None
