"""Chapters of a video and their exports: Markdown table of contents, JSON, WebVTT, SRT, YouTube."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from core.events import Event
from core.analysis.timeparse import format_timestamp

EXPORT_FORMATS = ("md", "json", "vtt", "srt", "youtube")


@dataclass
class Chapter:
    """One chapter: [start, end] seconds, a short title and a summary."""

    start: float
    end: float
    title: str
    summary: str = ""

    def to_event(self) -> Event:
        return Event(kind="chapter", start=self.start, end=self.end, label=self.title,
                     detail={"summary": self.summary}, source="vlm.chapters")


@dataclass
class VideoSummary:
    """Chapters and an overall summary of one video."""

    duration: float
    chapters: list[Chapter] = field(default_factory=list)
    summary: str = ""
    model: str = ""
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VideoSummary":
        return cls(
            duration=float(data["duration"]),
            chapters=[Chapter(**c) for c in data.get("chapters", [])],
            summary=data.get("summary", ""),
            model=data.get("model", ""),
            problems=list(data.get("problems", [])),
        )


def normalise_chapters(chapters: list[Chapter], duration: float, min_length: float = 1.0) -> list[Chapter]:
    """Sorted, clamped to [0, duration], without overlaps or gaps (each ends where the next starts), the first
    starting at 0, and chapters shorter than `min_length` merged into the previous one."""
    items = sorted((c for c in chapters if c.title.strip()), key=lambda c: c.start)
    out: list[Chapter] = []
    for c in items:
        start = min(max(0.0, c.start), duration)
        if out and start - out[-1].start < min_length:
            continue
        out.append(Chapter(start, duration, c.title.strip().replace("\n", " "), c.summary.strip()))
    if out:
        out[0].start = 0.0
    for a, b in zip(out, out[1:]):
        a.end = b.start
    if out:
        out[-1].end = duration
    return out


def _vtt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def _srt_time(seconds: float) -> str:
    return _vtt_time(seconds).replace(".", ",")


def _one_line(text: str) -> str:
    # cue text must not contain a blank line or "-->"
    return " ".join(text.replace("-->", "→").split())


def to_markdown(summary: VideoSummary, title: str = "Chapters") -> str:
    """A table of contents, "- [00:05:20] Title", then each chapter's summary and the overall summary."""
    lines = [f"# {title}", ""]
    if summary.summary:
        lines += [summary.summary.strip(), ""]
    for c in summary.chapters:
        lines.append(f"- [{format_timestamp(c.start, always_hours=True)}] {' '.join(c.title.split())}")
    for c in summary.chapters:
        if c.summary:
            lines += ["", f"## [{format_timestamp(c.start, always_hours=True)}] {' '.join(c.title.split())}", "", c.summary.strip()]
    return "\n".join(lines).rstrip() + "\n"


def to_json(summary: VideoSummary) -> str:
    return json.dumps(summary.to_dict(), ensure_ascii=False, indent=2)


def to_webvtt(summary: VideoSummary) -> str:
    """WebVTT chapters (one cue per chapter, `kind="chapters"` tracks)."""
    out = ["WEBVTT", ""]
    for n, c in enumerate(summary.chapters, 1):
        out += [f"chapter-{n}", f"{_vtt_time(c.start)} --> {_vtt_time(c.end)}", _one_line(c.title), ""]
    return "\n".join(out)


def to_srt(summary: VideoSummary) -> str:
    out = []
    for n, c in enumerate(summary.chapters, 1):
        out += [str(n), f"{_srt_time(c.start)} --> {_srt_time(c.end)}", _one_line(c.title), ""]
    return "\n".join(out)


def to_youtube(summary: VideoSummary) -> tuple[str, list[str]]:
    """YouTube description chapters ("0:00 Title") and the rules it had to apply.

    YouTube needs the first chapter at 0:00, at least three chapters, each at least 10 seconds long.
    """
    notes: list[str] = []
    chapters = normalise_chapters(summary.chapters, summary.duration, min_length=10.0)
    if len(chapters) < len(summary.chapters):
        notes.append("chapters shorter than 10 s were merged (YouTube's minimum)")
    if len(chapters) < 3:
        notes.append("YouTube shows chapters only when there are at least three")
    hours = summary.duration >= 3600

    def stamp(t: float) -> str:
        whole = int(t)
        h, rem = divmod(whole, 3600)
        m, s = divmod(rem, 60)
        return f"{h}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"

    lines = [f"{stamp(c.start)} {_one_line(c.title)}" for c in chapters]
    return "\n".join(lines) + ("\n" if lines else ""), notes


def export(summary: VideoSummary, fmt: str) -> str:
    """The summary in one of EXPORT_FORMATS."""
    if fmt == "md":
        return to_markdown(summary)
    if fmt == "json":
        return to_json(summary)
    if fmt == "vtt":
        return to_webvtt(summary)
    if fmt == "srt":
        return to_srt(summary)
    if fmt == "youtube":
        return to_youtube(summary)[0]
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
