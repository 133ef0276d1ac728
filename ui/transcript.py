"""What is said in a video, on the Video Q&A, Summaries and Library pages: the speech stage (a background job with
progress and cancel), the player's subtitles, and the transcript beside the player.

Streamlit cannot read where a playing video is, so the transcript follows playback in two ways: the player shows
the transcript as its subtitles (the browser shows the segment being said while it plays), and the transcript
lists each segment with its time as a button that moves the player there; the segment at the player's position
(after a seek from here, the timeline or an answer) is shown above the list, and the list starts around it.

Only widgets here: the work is the speech service's (core/app/speech.py). Transcript text is untrusted: it is shown
escaped (ui.safe.plain) or as plain text, never as Markdown or HTML.

    transcript = stored_transcript(stored, info.has_audio)
    st.video(path, start_time=..., subtitles=subtitles_of(transcript))
    transcript_panel(stored, transcript, key="video")
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import streamlit as st

from core.analysis.heard import mmss
from core.jobs import JobState
from ui.safe import plain

ENGINE_NAMES = {"pocketsphinx": "PocketSphinx (offline, English only)", "whisper": "Whisper", "qwen3_asr": "Qwen3-ASR"}
LANGUAGES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
             "nl": "Dutch", "ru": "Russian", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "ar": "Arabic",
             "hi": "Hindi", "tr": "Turkish", "pl": "Polish", "sv": "Swedish", "uk": "Ukrainian", "fa": "Persian"}
EXPORTS = {"srt": ("SRT", "application/x-subrip"), "vtt": ("WebVTT", "text/vtt"), "txt": ("Text", "text/plain"),
           "json": ("JSON", "application/json")}
LIST_BEFORE, LIST_AFTER = 3, 25  # segments listed before and after the one at the player's position
MAX_HITS = 50
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _service() -> Any:
    from core.app.speech import speech
    from ui.state import get_runtime

    return speech(get_runtime())


def speech_job_key(sha: str) -> str:
    """The key of the video's transcription job (the speech engine of the settings, its language detected)."""
    return _service().job_key(sha)


def stored_transcript(stored: Any, has_audio: bool = True) -> Any:
    """The video's transcript so far (finished, or what a running or stopped run has heard), None when there is
    none or the video has no sound (no work is done)."""
    if not has_audio:
        return None
    try:
        return _service().cached_transcript(stored.sha256)
    except Exception:  # noqa: BLE001 - the transcript is an addition; the page works without it
        return None


def start_transcription(stored: Any, page: str = "video") -> Any:
    """Start transcribing the video in the background (one job per video, shared by every session; a finished
    transcript is read back at once) and remember it in this session's jobs."""
    from ui.state import track_job

    job = _service().start_transcription(stored.path, stored.sha256, f"Transcribing {stored.name}")
    track_job(job.key, page, stored)
    return job


def transcription_running(stored: Any) -> bool:
    """True while the video's transcription job runs."""
    job = _service().transcription_job(stored.sha256)
    return job is not None and job.state is JobState.RUNNING


def speech_job_panel(stored: Any) -> JobState | None:
    """The transcription job's progress bar and Cancel button while it runs (its error once it failed)."""
    from ui.jobs import job_panel

    return job_panel(speech_job_key(stored.sha256), stored=stored)


def subtitles_of(transcript: Any) -> dict[str, bytes] | None:
    """The transcript as the player's subtitle track ("Speech", WebVTT with its text escaped), None without one."""
    if transcript is None or not transcript.segments:
        return None
    from core.speech.exports import to_vtt

    return {"Speech": to_vtt(transcript).encode("utf-8")}


def engine_words(transcript: Any) -> str:
    """Which engine heard it, in words (a model named by its hub id; never a server folder)."""
    name = ENGINE_NAMES.get(transcript.engine, str(transcript.engine))
    model = str(transcript.model or "")
    if transcript.engine != "pocketsphinx" and _HUB_ID.match(model):
        name += f" ({model})"
    return name


def language_words(code: Any) -> str:
    """'English' for 'en'; the code itself for a language not listed; '' when unknown."""
    return LANGUAGES.get(str(code or "").lower(), str(code or ""))


def _summary_line(transcript: Any) -> str:
    n = len(transcript.segments)
    parts = [f"{n} segment{'s' if n != 1 else ''}"]
    if transcript.speech_s is not None:
        parts.append(f"{mmss(transcript.speech_s)} of speech in {mmss(transcript.duration_s)}")
    if transcript.language:
        parts.append(language_words(transcript.language))
    parts.append(f"heard by {engine_words(transcript)}")
    return "**Transcript** · " + " · ".join(plain(p) for p in parts)


def _note_once(transcript: Any, key: str) -> None:
    """What a better model would add, when the offline engine made the transcript (one note, in plain words)."""
    from core.app.speech import better_model_note
    from ui.state import get_settings

    note = better_model_note(transcript, get_settings())
    if note:
        st.caption(plain(note.replace("`", "")), help="Shown because the offline engine made this transcript.")


def _current(transcript: Any, t: float) -> tuple[int | None, Any]:
    """(index, segment) being said at `t` seconds, else (index of the next one, None) in a pause."""
    segments = transcript.segments
    for n, s in enumerate(segments):
        if s.start <= t <= s.end:
            return n, s
        if s.start > t:
            return n, None
    return (len(segments) - 1 if segments else None), None


def _row(stored: Any, n: int, segment: Any, key: str, now: bool) -> None:
    from ui.state import seek_to

    with st.container(horizontal=True, vertical_alignment="center", gap="small"):
        st.button(f"▶ {mmss(segment.start)}", key=f"{key}_seg_{n}", on_click=seek_to,
                  args=(stored.sha256, segment.start), type="primary" if now else "secondary",
                  help=f"Move the player to {mmss(segment.start)}", width="content")
        text = plain(segment.text) or " "
        st.markdown(f"**{text}**" if now else text)


def transcript_panel(stored: Any, transcript: Any, key: str = "video", note: bool = True) -> None:
    """The transcript beside the player: a line of what it is, the segment at the player's position, a search, the
    segments around the player as buttons that move it, and the SRT / WebVTT / text / JSON downloads.

    `key`: unique on the page. `note`: show what a better model would add (when the offline engine made it)."""
    from ui.files import shown_text
    from ui.state import seek_of

    st.markdown(_summary_line(transcript))
    if not transcript.complete:
        st.caption(f"Transcribed so far: {transcript.chunks_done} of {transcript.chunks} stretches of speech. The rest "
                   "appears when the transcription has finished (a stopped one resumes where it was).")
    for w in transcript.warnings:
        st.caption(f"Note: {shown_text(w, stored)}")
    if note:
        _note_once(transcript, key)
    segments = list(transcript.segments)
    if not segments:
        st.info("No words were heard in the sound of this video.")
        return
    t = seek_of(stored.sha256)
    at, now = _current(transcript, t)
    with st.container(border=True, key=f"{key}_transcript_now"):
        if now is not None:
            st.caption(f"Said at the player's position ({mmss(t)}), {mmss(now.start)}–{mmss(now.end)}:")
            st.markdown(plain(now.text))
        else:
            st.caption(f"Nothing is said at the player's position ({mmss(t)}).")
    query = st.text_input("Search the transcript", key=f"{key}_transcript_query", placeholder="words that are said",
                          help="Finds the segments holding these words (any case); a click on a time moves the "
                               "player there.")
    if query.strip():
        hits = transcript.search(query)
        index = {id(s): n for n, s in enumerate(segments)}
        if not hits:
            st.caption(f"“{plain(query.strip())}” is not said in the transcript.")
        else:
            st.caption(f"“{plain(query.strip())}” is said in {len(hits)} segment{'s' if len(hits) != 1 else ''}"
                       + (f"; the first {MAX_HITS} are shown." if len(hits) > MAX_HITS else "."))
        with st.container(key=f"{key}_transcript_hits"):
            for s in hits[:MAX_HITS]:
                n = index.get(id(s), 0)
                _row(stored, n, s, key, now is not None and n == at)
    else:
        first = max(0, (at or 0) - LIST_BEFORE)
        shown = segments[first:first + LIST_BEFORE + LIST_AFTER + 1]
        if first or first + len(shown) < len(segments):
            st.caption(f"Segments {first + 1}–{first + len(shown)} of {len(segments)}, around the player's position "
                       "(move the player, or search, to see others).")
        with st.container(height=min(420, 60 + 48 * len(shown)), key=f"{key}_transcript_list"):
            for k, s in enumerate(shown):
                _row(stored, first + k, s, key, now is not None and first + k == at)
    export_buttons(stored, transcript, key)


def export_buttons(stored: Any, transcript: Any, key: str) -> None:
    """Download buttons: the transcript as SRT, WebVTT, plain text and JSON, named after the user's file."""
    from core.speech.exports import SUFFIXES, export

    base = Path(stored.name).stem or "transcript"
    with st.container(horizontal=True, key=f"{key}_transcript_exports"):
        for fmt, (label, mime) in EXPORTS.items():
            st.download_button(f"{label}", export(transcript, fmt).encode("utf-8"),
                               file_name=f"{base}{SUFFIXES[fmt]}", mime=mime, key=f"{key}_transcript_dl_{fmt}",
                               on_click="ignore", icon=":material/download:",
                               help=f"The transcript as {label} (with its times)")


def speech_caption(transcript: Any, what: str) -> None:
    """One line saying the transcript is used for `what` (e.g. "the captions and chapters")."""
    if transcript is not None and transcript.segments:
        n = len(transcript.segments)
        st.caption(f"What is said ({n} segment{'s' if n != 1 else ''} of the transcript) is used for {plain(what)} "
                   "too.")


def sources_caption(sources: Any) -> None:
    """Under an answer: whether its evidence was seen (the frames) or heard (the speech given with the question),
    and which stretches of speech the answer repeats. Nothing when the answer has no sources (no transcript)."""
    from core.analysis.heard import evidence_words

    items = [s for s in (sources or []) if isinstance(s, dict)]
    if not any(s.get("evidence") == "heard" for s in items):
        return
    parts = []
    for s in items:
        if s.get("evidence") == "seen":
            parts.append(f"seen: {s.get('text', 'the frames')}")
    heard = [s for s in items if s.get("evidence") == "heard"]
    used = [s for s in heard if s.get("used")]
    times = ", ".join(f"{mmss(s['start'])}–{mmss(s['end'])}" for s in heard[:8]) + ("…" if len(heard) > 8 else "")
    parts.append(f"heard: the speech at {times} was given with the question")
    for s in used[:3]:
        text = " ".join(str(s.get("text", "")).split())
        parts.append(f"the answer repeats what is said at {mmss(s['start'])}: “{text[:120]}”")
    word = evidence_words(items)
    st.caption(plain(f"Evidence: {word}. " if word else "") + " · ".join(plain(p) for p in parts))
