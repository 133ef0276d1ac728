"""A transcript as SubRip (SRT), WebVTT, plain text and JSON, and SRT / WebVTT read back into segments.

One cue per segment. WebVTT text escapes `&`, `<` and `>` (so a transcript can never inject markup into a player);
reading it back undoes that and drops cue settings and tags.
"""

from __future__ import annotations

import json
import re
from html import unescape

from core.speech.types import Segment, Transcript

FORMATS = ("srt", "vtt", "txt", "json")
SUFFIXES = {"srt": ".srt", "vtt": ".vtt", "txt": ".txt", "json": ".json"}
MEDIA_TYPES = {"srt": "application/x-subrip", "vtt": "text/vtt", "txt": "text/plain", "json": "application/json"}


def _stamp(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _one_line(text: str) -> str:
    # a blank line ends a cue: keep each cue's text free of empty lines
    return "\n".join(line.strip() for line in str(text).splitlines() if line.strip())


def to_srt(transcript: Transcript) -> str:
    """SubRip text: numbered cues `HH:MM:SS,mmm --> HH:MM:SS,mmm` and the segment's text."""
    cues = []
    for n, seg in enumerate((s for s in transcript.segments if s.text), 1):
        cues.append(f"{n}\n{_stamp(seg.start, ',')} --> {_stamp(seg.end, ',')}\n{_one_line(seg.text)}\n")
    return "\n".join(cues)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(transcript: Transcript) -> str:
    """WebVTT text: a `WEBVTT` header, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm` with escaped text."""
    head = "WEBVTT"
    if transcript.language:
        head += f"\nLanguage: {transcript.language}"
    cues = [head + "\n"]
    for seg in transcript.segments:
        if seg.text:
            cues.append(f"{_stamp(seg.start, '.')} --> {_stamp(seg.end, '.')}\n{_vtt_escape(_one_line(seg.text))}\n")
    return "\n".join(cues)


def to_txt(transcript: Transcript, timestamps: bool = False) -> str:
    """Plain text, one segment a line (with `timestamps`: each line starts with `[m:ss]`)."""
    lines = []
    for seg in transcript.segments:
        if not seg.text:
            continue
        text = " ".join(_one_line(seg.text).splitlines())
        if timestamps:
            whole = int(seg.start)
            h, rem = divmod(whole, 3600)
            m, s = divmod(rem, 60)
            text = (f"[{h}:{m:02d}:{s:02d}] " if h else f"[{m}:{s:02d}] ") + text
        lines.append(text)
    return "\n".join(lines) + ("\n" if lines else "")


def to_json(transcript: Transcript) -> str:
    """The whole transcript (segments, words, language, engine, model...) as JSON (`Transcript.from_dict` reads it)."""
    return json.dumps(transcript.to_dict(), ensure_ascii=False, indent=2) + "\n"


def export(transcript: Transcript, fmt: str) -> str:
    """The transcript in `fmt` (srt, vtt, txt or json); ValueError naming the formats for another."""
    writers = {"srt": to_srt, "vtt": to_vtt, "txt": to_txt, "json": to_json}
    key = fmt.lower().lstrip(".")
    if key not in writers:
        raise ValueError(f"unknown transcript format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return writers[key](transcript)


# ------------------------------------------------------------------------------------------ reading back
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})"
_ARROW = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"</?[a-zA-Z][^>]*>|<\d[\d:.]*>")


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def _cues(text: str) -> list[tuple[float, float, str]]:
    out: list[tuple[float, float, str]] = []
    blocks = re.split(r"\r?\n\s*\r?\n", text.replace("\ufeff", "").strip())
    for block in blocks:
        lines = block.splitlines()
        for i, line in enumerate(lines):
            m = _ARROW.match(line)
            if m:
                g = m.groups()
                out.append((_seconds(*g[:4]), _seconds(*g[4:]), "\n".join(lines[i + 1:]).strip()))
                break
    return out


def parse_srt(text: str) -> list[Segment]:
    """The segments of SubRip text (cue numbers and formatting tags dropped)."""
    return [Segment(a, b, _TAG.sub("", t)) for a, b, t in _cues(text)]


def parse_vtt(text: str) -> list[Segment]:
    """The segments of WebVTT text (header, NOTE / STYLE blocks, cue settings and tags dropped; escapes undone)."""
    if not text.lstrip("\ufeff").startswith("WEBVTT"):
        raise ValueError("not WebVTT: the text does not start with WEBVTT")
    return [Segment(a, b, unescape(_TAG.sub("", t))) for a, b, t in _cues(text)]
