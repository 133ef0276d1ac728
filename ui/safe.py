"""Untrusted text (file names, OCR text, model answers, error messages quoting them) made safe for the many
Streamlit calls that render Markdown: st.markdown, st.caption, st.info/st.error, st.subheader, spinner and
progress texts, button labels.

`plain(text)`: the text exactly as written, every Markdown character escaped (for names and messages).
`shown(message)`: a core message (error, warning) in the dashboard's words (core.errors.for_web), escaped.
`safe_markdown(text)`: a model answer keeps its formatting (bold, lists, tables, code) but can never load
anything: images `![..](..)` and raw HTML `<...>` (which also covers `<http://..>` autolinks) are shown as
the characters they are (an invisible zero-width space keeps them from starting). Links stay links: they
act only when clicked, Streamlit turns `javascript:`/`vbscript:` targets into "#", and browsers refuse to open
`data:` and `file:` links from a web page.
"""

from __future__ import annotations

import re
import textwrap
import time
from typing import Iterable

import streamlit as st

ZWSP = "\u200b"
# The characters that start Markdown inside a line (backslash escapes turn each into itself), with '$'
# (LaTeX) and '&' (entities); and what starts a block at the start of a line (lists, headings, quotes).
_MD_INLINE = re.compile(r"([\\`*_{}\[\]<>!~|$&#])")
_MD_LINE_START = re.compile(r"^(\d*)([-+=.)])")
# What Streamlit reads after escapes are undone: :material/icon:, :color[text] and the bare links of
# http://..., www.... and e-mail addresses. A zero-width space after each breaks them.
_LINKISH = re.compile(r":(?=[A-Za-z/])|@|[wW]{3}(?=\.)")
_FENCE_OPEN = re.compile(r"^(`{3,}|~{3,})(.*)$")


def plain(text: object) -> str:
    """`text` on one line with every Markdown character escaped: Streamlit shows it literally.

    For st.markdown/caption/error/... bodies and labels; never put it inside a `code span` (backslashes
    are literal there): use st.code or st.text for that.
    """
    one_line = " ".join(str(text).split())
    escaped = _MD_INLINE.sub(r"\\\1", one_line)
    return _MD_LINE_START.sub(r"\1\\\2", _LINKISH.sub(lambda m: m.group() + ZWSP, escaped))


def shown(message: object) -> str:
    """A message from core (an error, a warning) as a page shows it: in the dashboard's words (no command-line
    options, no exception class names: core.errors.for_web), then escaped like `plain`."""
    from core.errors import for_web

    return plain(for_web(message))


def _neutralise(line: str) -> str:
    """A line outside fenced code: an invisible zero-width space after every '<' and between '!' and '[', so
    no HTML tag, HTML comment, <autolink> or image can start, whatever inline code spans the renderer pairs
    up (inside inline code the space is invisible; fenced code blocks are left exactly as written)."""
    return line.replace("<", "<" + ZWSP).replace("![", "!" + ZWSP + "[")


def _closes(line: str, fence: str) -> bool:
    """True when `line` closes a fenced block opened by `fence` (CommonMark: <= 3 spaces, the same character
    at least as many times, then only spaces or tabs)."""
    body = line.lstrip(" ")
    run = body.rstrip(" \t")
    return len(line) - len(body) <= 3 and run.startswith(fence) and set(run) == {fence[0]}


def safe_markdown(text: object) -> str:
    """Markdown of `text` (a model answer): its formatting kept, but it loads no image and renders no HTML."""
    # the same clean-up st.markdown does, so a line at column 0 here is at column 0 for the renderer
    body = textwrap.dedent(str(text).replace("\r\n", "\n").replace("\r", "\n")).strip()
    out: list[str] = []
    fence: str | None = None  # the opening run while inside a fenced code block
    for line in body.split("\n"):
        if fence is not None:
            out.append(line)
            if _closes(line, fence):
                fence = None
            continue
        # only a fence at column 0 is surely a top-level fence: one inside a list or quote may end early,
        # so its lines are treated as text (at worst an invisible space in code)
        opened = _FENCE_OPEN.match(line)
        if opened and not (opened.group(1)[0] == "`" and "`" in opened.group(2)):
            fence = opened.group(1)
            out.append(line)
            continue
        out.append(_neutralise(line))
    return "\n".join(out)


def stream_markdown(chunks: Iterable[str], every_s: float = 0.1) -> str:
    """Show streamed text (a model answer) as it arrives, sanitised with safe_markdown; return the whole text.

    Used instead of st.write_stream, which renders each chunk as raw Markdown.
    """
    box = st.empty()
    text = ""
    shown = 0.0
    for chunk in chunks:
        text += str(chunk)
        now = time.monotonic()
        if now - shown >= every_s:
            box.markdown(safe_markdown(text))
            shown = now
    box.markdown(safe_markdown(text))
    return text
