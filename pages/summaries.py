"""Summaries: dense captions, chapters and an overall summary of a video (the model's part), next to the
timeline the CPU finds without it. Every workflow is the runtime's video service (core/app/video.py)."""

from __future__ import annotations

import streamlit as st

from core.app.video import analysis_key
from core.charts.timeline import clock, lane_title, timeline_figure
from core.events import Event
from core.jobs import JobState
from core.media import SamplingPlan, VideoError
from ui.files import pick_file
from ui.jobs import job_panel
from ui.model import model_ready
from ui.safe import plain
from ui.state import get_runtime, settings_or_stop, sidebar_generation_params

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
         "export the chapters for a player or YouTube. Captions and chapters need the model; scene cuts and motion "
         "below do not.")

stored = pick_file("video", "summary")
if stored is None:
    st.info("Upload a video to start.")
    st.stop()
try:
    info = video.probe(stored.path, stored.sha256)
except VideoError as exc:
    st.error(f"{plain(stored.name)} cannot be used: {plain(exc)}")
    st.stop()
sha = stored.sha256
st.caption(f"**{plain(stored.name)}** · {clock(info.duration)} · {info.width}×{info.height}")

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
            video.start_analysis(stored.path, sha, CPU_STAGES, plan, f"Analysing {stored.name}")
            st.rerun()
    job_panel(cpu_key)

# ---------------------------------------------------------------- with the model
st.subheader("Captions, chapters and summary")
summary = None
if model_ready(settings, "Captions, chapters and summaries"):
    from core.analysis.summary import CaptionOptions

    c = st.columns(3)
    chunk = c[0].number_input("Chunk length (s)", 10.0, 600.0, 60.0, 10.0, key="summary_chunk",
                              help="The video is captioned chunk by chunk; each finished chunk is saved at once.")
    fps = c[1].number_input("Frames per second in a chunk", 0.1, 4.0, 1.0, 0.1, key="summary_fps")
    tokens = c[2].number_input("Tokens per chunk", 64, 4096, 512, 64, key="summary_tokens")
    options = CaptionOptions(chunk_s=float(chunk), overlap_s=min(5.0, float(chunk) / 4), fps=float(fps),
                             max_new_tokens=int(tokens))
    mkey = video.summary_key(sha, options)
    mjob = runtime.jobs.get(mkey)
    running = mjob is not None and mjob.state is JobState.RUNNING
    if st.button("Caption and summarise", type="primary", key="summary_run", disabled=running):
        video.start_summary(stored.path, sha, info, options, params.max_new_tokens, events,
                            f"Captioning {stored.name}")
        st.rerun()
    job_panel(mkey)
    if mjob is not None and mjob.state is JobState.DONE:
        done = mjob.result
        summary = done.summary
        events = events + done.events
        st.caption(plain(done.captions.message))
else:
    st.caption("With the model this page adds: captions of what happens every few seconds, chapters with titles, a "
               "summary of the whole video, and chapter exports (Markdown, JSON, WebVTT, SRT, YouTube).")

# ---------------------------------------------------------------- timeline and results
if events:
    counts: dict[str, int] = {}
    for e in events:
        counts[lane_title(e.kind)] = counts.get(lane_title(e.kind), 0) + 1
    st.markdown("**Timeline** · " + " · ".join(f"{k}: {v}" for k, v in counts.items()))
    st.plotly_chart(timeline_figure(events, info.duration), key="summary_timeline", config={"displaylogo": False})
if summary is not None:
    if summary.summary:
        st.markdown("**Summary**")
        st.text(summary.summary)
    for p in summary.problems:
        st.caption(f"Note: {plain(p)}")
    if summary.chapters:
        st.markdown("**Chapters**")
        for ch in summary.chapters:
            st.text(f"{clock(ch.start)}  {ch.title}" + (f" — {ch.summary}" if ch.summary else ""))
        from core.analysis.chapters import export

        cols = st.columns(len(EXPORTS))
        base = stored.name.rsplit(".", 1)[0]
        for col, (fmt, (label, mime, ext)) in zip(cols, EXPORTS.items()):
            col.download_button(label, export(summary, fmt).encode("utf-8"), file_name=f"{base}-chapters.{ext}",
                                mime=mime, key=f"summary_dl_{fmt}", on_click="ignore")
