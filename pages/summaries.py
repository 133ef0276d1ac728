"""Summaries: dense captions, chapters and an overall summary of a video (the model's part), next to the
timeline the CPU finds without it, with the player: a click on the timeline or on a chapter moves it there.
Every workflow is the runtime's video service (core/app/video.py)."""

from __future__ import annotations

import streamlit as st

from core.app.video import analysis_key
from core.charts.timeline import clock, event_for_selection, lane_title, timeline_figure
from core.events import Event
from core.files import needs_proxy, proxy_path
from core.jobs import JobState
from core.media import SamplingPlan, VideoError
from ui.files import pick_file, shown_text
from ui.jobs import job_panel
from ui.model import model_ready
from core.analysis.heard import speech_events
from ui.safe import plain
from ui.state import get_runtime, seek_of, seek_to, settings_or_stop, sidebar_generation_params, track_job
from ui.transcript import (
    speech_caption,
    speech_job_panel,
    start_transcription,
    stored_transcript,
    subtitles_of,
    transcript_panel,
    transcription_running,
)

try:  # export buttons for chapters (another part of the dashboard; this page works without them)
    from ui.clips import clip_buttons, highlights_picker
except ImportError:  # pragma: no cover - the clips part missing
    clip_buttons = highlights_picker = None  # type: ignore[assignment]

EXPORTS = {"md": ("Markdown", "text/markdown", "md"), "json": ("JSON", "application/json", "json"),
           "vtt": ("WebVTT chapters", "text/vtt", "vtt"), "srt": ("SRT", "text/plain", "srt"),
           "youtube": ("YouTube chapters", "text/plain", "txt")}
CPU_STAGES = ("scenes", "motion")

settings = settings_or_stop()
params = sidebar_generation_params()
runtime = get_runtime()
video = runtime.video
st.title("Summaries")
st.write("Turn a long video into dense captions (what happens, with times), chapters and a short summary, and "
         "export the chapters for a player or YouTube. Captions and chapters need the model; scene cuts, motion and "
         "the transcript of what is said do not.")

stored = pick_file("video", "summary")
if stored is None:
    st.info("Upload a video to start, or open one from the Library.")
    st.stop()
try:
    info = video.probe(stored.path, stored.sha256)
except VideoError as exc:
    st.error(f"{plain(stored.name)} cannot be used: {shown_text(exc, stored)}")
    st.stop()
sha = stored.sha256
st.caption(f"**{plain(stored.name)}** · {clock(info.duration)} · {info.width}×{info.height}")


def _seek(t: float) -> None:
    seek_to(sha, t)


# ---------------------------------------------------------------- the player
seek = seek_of(sha)
why = needs_proxy(info)
proxy = proxy_path(settings.cache_dir, sha)
transcript = stored_transcript(stored, info.has_audio)  # what is said (None: not transcribed, or no sound)
player, beside = st.columns([3, 2])
with player:
    if why is None:
        st.video(stored.path, start_time=int(seek), subtitles=subtitles_of(transcript))
    elif proxy.is_file():
        st.video(str(proxy), start_time=int(seek), subtitles=subtitles_of(transcript))
        st.caption(f"Playing a small 360p copy because {plain(why)}.")
    else:
        st.info(f"The player needs a small copy of this video because {plain(why)}: make it on the Video Q&A page "
                "(the captions do not need it).")
    if seek:
        st.caption(f"Player set to {clock(int(seek))} (it jumps to whole seconds).")

# ---------------------------------------------------------------- without the model
plan = SamplingPlan()
cpu_key = analysis_key(sha, CPU_STAGES, plan)
events: list[Event] = []
cached = video.cached_analysis(stored.path, sha, CPU_STAGES, plan)
if cached is not None:
    events = list(cached.events)
else:
    cjob = runtime.jobs.get(cpu_key)
    st.subheader("Scene cuts and motion")
    if cjob is None or cjob.state is not JobState.RUNNING:
        st.caption("Found on the CPU in seconds; they frame the timeline below and help the chapters.")
        if st.button("Find scene cuts and motion (no model needed)", key="summary_cpu"):
            job = video.start_analysis(stored.path, sha, CPU_STAGES, plan, f"Analysing {stored.name}")
            track_job(job.key, "summaries", stored)
            st.rerun()
    job_panel(cpu_key, stored=stored)
# on-screen text read on the Video Q&A page (when it was) is part of what the chapters are made from
texts = video.cached_analysis(stored.path, sha, ("text",), plan)
text_events = [e for e in texts.events if e.kind == "text"] if texts is not None else []

# ---------------------------------------------------------------- what is said (no model needed)
with beside:
    if transcript is not None:
        transcript_panel(stored, transcript, key="summary")
    elif info.has_audio:
        st.markdown("**Transcript**")
        st.caption("What is said, with times: found without the model, and used for the captions and chapters.")
        if not transcription_running(stored) and st.button("Transcribe the speech", key="summary_transcribe",
                                                           icon=":material/record_voice_over:"):
            start_transcription(stored, "summaries")
            st.rerun()
    if info.has_audio:
        speech_job_panel(stored)

# ---------------------------------------------------------------- with the model
st.subheader("Captions, chapters and summary")
summary = None
if model_ready(settings, "Captions, chapters and summaries"):
    from core.analysis.summary import CaptionOptions

    c = st.columns(3)
    chunk = c[0].number_input("Chunk length (s)", 10.0, 600.0, 60.0, 10.0, key="summary_chunk",
                              persist_state="session",
                              help="The video is captioned chunk by chunk; each finished chunk is saved at once.")
    fps = c[1].number_input("Frames per second in a chunk", 0.1, 4.0, 1.0, 0.1, key="summary_fps",
                            persist_state="session")
    tokens = c[2].number_input("Tokens per chunk", 64, 4096, 512, 64, key="summary_tokens", persist_state="session")
    options = CaptionOptions(chunk_s=float(chunk), overlap_s=min(5.0, float(chunk) / 4), fps=float(fps),
                             max_new_tokens=int(tokens))
    mkey = video.summary_key(sha, options)
    mjob = runtime.jobs.get(mkey)
    running = mjob is not None and mjob.state is JobState.RUNNING
    if text_events:
        st.caption(f"The {len(text_events)} stretches of on-screen text read on the Video Q&A page are used too.")
    speech_caption(transcript, "the captions and chapters")
    if st.button("Caption and summarise", type="primary", key="summary_run", disabled=running):
        job = video.start_summary(stored.path, sha, info, options, params.max_new_tokens, text_events,
                                  f"Captioning {stored.name}")
        track_job(job.key, "summaries", stored)
        st.rerun()
    job_panel(mkey, stored=stored)
    if mjob is not None and mjob.state is JobState.DONE:
        done = mjob.result
        summary = done.summary
        events = events + done.events
        st.caption(plain(done.captions.message))
else:
    st.caption("With the model this page adds: captions of what happens every few seconds, chapters with titles, a "
               "summary of the whole video, and chapter exports (Markdown, JSON, WebVTT, SRT, YouTube).")

# ---------------------------------------------------------------- timeline and results
events = events + text_events + speech_events(transcript)  # (none of the others is on-screen text or speech)
st.session_state["summary_events"] = events


def _on_select() -> None:
    picked = event_for_selection(st.session_state.get("summary_events", []), st.session_state.get("summary_timeline"))
    if picked is not None:
        seek_to(sha, picked[1].start)


if events:
    counts: dict[str, int] = {}
    for e in events:
        counts[lane_title(e.kind)] = counts.get(lane_title(e.kind), 0) + 1
    st.markdown("**Timeline** · " + " · ".join(f"{k}: {v}" for k, v in counts.items()))
    st.caption("Click an event (a bar or a diamond) to move the player there; drag to zoom, double-click to zoom out.")
    st.plotly_chart(timeline_figure(events, info.duration, thumbnails=video.storyboard(sha) or None),
                    key="summary_timeline", on_select=_on_select, selection_mode=("points", "box"),
                    config={"displaylogo": False})
if summary is not None:
    if summary.summary:
        st.markdown("**Summary**")
        st.text(summary.summary)
    for p in summary.problems:
        st.caption(f"Note: {shown_text(p, stored)}")
    if summary.chapters:
        st.markdown("**Chapters**")
        for n, ch in enumerate(summary.chapters):
            row = st.columns([1, 6], vertical_alignment="center")
            row[0].button(f"▶ {clock(ch.start)}", key=f"summary_chapter_{n}", on_click=_seek, args=(ch.start,),
                          help="Move the player to the start of this chapter")
            row[1].text(f"{ch.title}" + (f" — {ch.summary}" if ch.summary else ""))
        from core.analysis.chapters import export

        cols = st.columns(len(EXPORTS))
        base = stored.name.rsplit(".", 1)[0]
        for col, (fmt, (label, mime, ext)) in zip(cols, EXPORTS.items()):
            col.download_button(label, export(summary, fmt).encode("utf-8"), file_name=f"{base}-chapters.{ext}",
                                mime=mime, key=f"summary_dl_{fmt}", on_click="ignore")
        if clip_buttons is not None and highlights_picker is not None:
            with st.expander("Export chapters as clips"):
                clip_buttons(stored.path, summary.chapters, key="summary_clip", name=stored.name, input_hash=sha)
                highlights_picker(stored.path, summary.chapters, key="summary_highlights", name=stored.name,
                                  input_hash=sha)
