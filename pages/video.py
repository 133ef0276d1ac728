"""Video Q&A: play a video, plan what the model will see, analyse it in the background, explore the
timeline (a click seeks the player), and talk about the video with the model: a conversation per video, kept with
the video's results, whose answer times seek the player.
Every workflow is the runtime's video service (core/app/video.py); this page only wires widgets to it."""

from __future__ import annotations

import streamlit as st

from core.analysis.video_pipeline import STAGES
from core.analysis.heard import speech_events
from core.app.video import DEFAULT_FPS, DEFAULT_MAX_FRAMES, analysis_key
from core.charts.timeline import clock, event_for_selection, lane_title, timeline_figure
from core.events import Event
from core.files import make_proxy, needs_proxy, proxy_path
from core.files.store import file_limit_bytes
from core.jobs import JobState
from core.media import VideoError
from core.media.budget import TOKEN_LADDER
from core.media.probe import VideoInfo
from ui.document_qa import stream_answer
from ui.files import pick_file, shown_text
from ui.jobs import job_panel
from ui.model import model_ready
from ui.safe import plain, safe_markdown
from ui.state import get_runtime, seek_of, seek_to, settings_or_stop, sidebar_generation_params, track_job
from ui.transcript import (
    sources_caption,
    speech_job_panel,
    start_transcription,
    stored_transcript,
    subtitles_of,
    transcript_panel,
    transcription_running,
)

try:  # export buttons for events and answer times (another part of the dashboard; this page works without them)
    from ui.clips import clip_buttons
except ImportError:  # pragma: no cover - the clips part missing
    clip_buttons = None  # type: ignore[assignment]

STAGE_NAMES = {"scenes": "Scene cuts", "motion": "Motion", "text": "On-screen text (reads frames: slower)"}
GIB = 1024**3

settings = settings_or_stop()
params = sidebar_generation_params()
runtime = get_runtime()
video = runtime.video
jobs = runtime.jobs
st.title("Video Q&A")
st.write("Drop in a video: see what the model would cost before anything runs, analyse it in the background into a "
         "timeline of scene cuts, motion, on-screen text and speech, click an event to jump the player there, and ask "
         "questions about it.")

stored = pick_file("video", "video")
if stored is None:
    st.info("Upload a video (mp4, mov, mkv, webm, avi) to start. Everything except questions runs without the model.")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=64)
def probe(path: str, sha: str) -> dict:
    """The probe of a file (the service keeps it in the result cache too, so reopening is instant)."""
    return video.probe(path, sha).to_dict()


try:
    info = VideoInfo.from_dict(probe(stored.path, stored.sha256))
except VideoError as exc:
    st.error(f"{plain(stored.name)} cannot be used: {shown_text(exc, stored)}")
    st.stop()

sha = stored.sha256
st.caption(f"**{plain(stored.name)}** · {clock(info.duration)} · {info.width}×{info.height} · "
           f"{info.fps:.2f} fps · {plain(info.codec)} · {stored.size_bytes / 1024**2:.1f} MiB")
for w in info.warnings:
    st.caption(f"Note: {shown_text(w, stored)}")

# ---------------------------------------------------------------- plan and stages (read before the player)
duration = float(round(info.duration, 1))
if st.session_state.get("video_plan_for") != sha:
    st.session_state["video_plan_for"] = sha
    st.session_state["video_window"] = (0.0, duration)
    for name in ("video_selected", "video_event_pick", "video_pending"):
        st.session_state.pop(name, None)
window_kept = st.session_state.get("video_window")
if not (isinstance(window_kept, (tuple, list)) and len(window_kept) == 2
        and 0.0 <= float(window_kept[0]) < float(window_kept[1]) <= duration):
    # the slider's value is always a (start, end) pair of this video: a single value (its state dropped while
    # another page was shown) would make it one handle
    st.session_state["video_window"] = (0.0, duration)
talk = video.conversation(sha)
transcript = stored_transcript(stored, info.has_audio)  # what is said (None: not transcribed, or no sound)


def _events() -> list[Event]:
    return st.session_state.get("video_events", [])


def _choose(index: int | None) -> None:
    events = _events()
    if index is None or not 0 <= index < len(events):
        return
    st.session_state["video_selected"] = index
    seek_to(sha, events[index].start)


def _on_chart_select() -> None:
    picked = event_for_selection(_events(), st.session_state.get("video_timeline"))
    if picked is not None:
        _choose(picked[0])
        st.session_state["video_event_pick"] = picked[0]


def _on_pick() -> None:
    _choose(st.session_state.get("video_event_pick"))


# ---------------------------------------------------------------- player | plan
left, right = st.columns([1, 1], gap="large")
with left:
    st.subheader("Player")
    seek = seek_of(sha)
    why = needs_proxy(info)
    subtitles = subtitles_of(transcript)  # the browser shows what is said as the video plays
    if why is None:
        st.video(stored.path, start_time=int(seek), subtitles=subtitles)
    else:
        proxy = proxy_path(settings.cache_dir, sha)
        if proxy.is_file():
            st.video(str(proxy), start_time=int(seek), subtitles=subtitles)
            st.caption(f"Playing a small 360p copy because {plain(why)}; every analysis reads the original.")
        else:
            pkey = f"proxy:{sha}"
            job = jobs.get(pkey)
            if job is None or job.state in (JobState.FAILED, JobState.CANCELLED):
                if job is not None and job.state is JobState.FAILED:
                    st.error(f"The small copy for the player could not be made: {shown_text(job.error, stored)}")
                if st.button("Make a small copy to play", key="video_make_proxy"):
                    jobs.submit(pkey, f"Making a small copy of {stored.name} for the player",
                                lambda ctx: make_proxy(stored.path, proxy, progress=ctx.progress, cancel=ctx.cancel,
                                                       limit_bytes=file_limit_bytes(settings)),
                                restart=True)
                    track_job(pkey, "video", stored)
                    st.rerun()
            st.info(f"The player needs a small copy of this video because {plain(why)}. "
                    "Analysis does not need it.")
            job_panel(pkey, stored=stored)
    if seek:
        st.caption(f"Player set to {clock(int(seek))} (it jumps to whole seconds).")

with right:
    st.subheader("What the model will see")
    window_now = st.session_state["video_window"] if duration > 0.2 else (0.0, duration)
    window_now = (float(window_now[0]), float(window_now[1]))
    # the plan chosen for this machine, the best that fits (the widgets start at it): chosen once per video, window
    # and answer length, so memory taken by a request running meanwhile does not move it
    auto_for = (sha, window_now, params.max_new_tokens)
    if st.session_state.get("video_auto_for") != auto_for:
        try:
            st.session_state["video_auto"] = video.default_plan(info, window=window_now,
                                                                max_new_tokens=params.max_new_tokens, input_hash=sha)
        except VideoError:
            st.session_state["video_auto"] = None  # the same error is shown with the plan of the widgets below
        st.session_state["video_auto_for"] = auto_for
    auto = st.session_state["video_auto"]
    if st.session_state.get("video_plan_seeded") != sha:
        st.session_state["video_plan_seeded"] = sha
        st.session_state["video_plan_custom"] = False
    if auto is not None and not st.session_state.get("video_plan_custom"):
        st.session_state["video_fps"] = float(auto.plan.fps)
        st.session_state["video_max_frames"] = int(auto.plan.max_frames)
        st.session_state["video_frame_pixels"] = auto.frame_pixels or 0
    for key, default in (("video_fps", DEFAULT_FPS), ("video_max_frames", DEFAULT_MAX_FRAMES),
                         ("video_frame_pixels", 0)):
        st.session_state.setdefault(key, default)

    def _customised() -> None:
        st.session_state["video_plan_custom"] = True

    def _use_chosen() -> None:
        st.session_state["video_plan_custom"] = False

    c1, c2 = st.columns(2)
    fps = c1.number_input("Frames per second", min_value=0.05, max_value=8.0, step=0.25, key="video_fps",
                          on_change=_customised, help="Qwen3-VL's default is 2. Lower it for long videos.",
                          persist_state="session")
    max_frames = c2.number_input("Max frames", min_value=2, max_value=2048, step=32, key="video_max_frames",
                                 on_change=_customised, persist_state="session",
                                 help="Upper bound on frames sent to the model (Qwen3-VL's default is 768; the plan "
                                      "chosen for this machine may be lower).")
    pixel_steps = sorted({0, *(t * 1024 for t in TOKEN_LADDER), int(st.session_state["video_frame_pixels"])})
    frame_pixels = st.selectbox(
        "Pixels per frame", pixel_steps, key="video_frame_pixels", on_change=_customised, persist_state="session",
        format_func=lambda px: ("Standard (Qwen3-VL's budget over all frames)" if not px
                                else f"Up to {px // 1024:,} visual tokens ({px:,} pixels)"),
        help="Each visual token covers 32×32 pixels of a pair of frames; Qwen3-VL never goes below 128 per frame.")
    if duration > 0.2:
        window = st.slider("Time window (s)", 0.0, duration, key="video_window", step=0.1, persist_state="session",
                           help="Only this stretch is sampled for the model; the analysis below covers the whole video.")
    else:
        window = (0.0, duration)
    mine = (float(fps), int(max_frames), int(frame_pixels) or None)
    try:
        if auto is not None and mine == (auto.plan.fps, auto.plan.max_frames, auto.frame_pixels):
            choice = auto
        else:
            choice = video.plan(info, fps=float(fps), max_frames=int(max_frames),
                                window=(float(window[0]), float(window[1])), max_new_tokens=params.max_new_tokens,
                                max_pixels=int(frame_pixels) or None)
        plan, est = choice.plan, choice.estimate
    except VideoError as exc:
        st.error(plain(exc))
        choice, plan, est = None, None, None
    if choice is not None and est is not None:
        where, size, gpu_name = choice.where, choice.model_size, choice.gpu_name
        m = st.columns(2)
        m[0].metric("Frames", est.frames, help=f"{est.frame_width}×{est.frame_height} pixels each")
        m[1].metric("Effective fps", f"{est.effective_fps:.2f}",
                    help=f"the model can tell times apart every {est.timestamp_resolution:.1f} s")
        m = st.columns(2)
        m[0].metric("Visual tokens", f"{est.visual_tokens:,}", help="tokens the frames become inside the model")
        m[1].metric("Prompt tokens", f"{est.prompt_tokens:,}", help="frames, their timestamps and the question")
        copies = " × 2 (the kept video prefix and its copy)" if est.kv_copies == 2 else ""
        st.metric(f"Peak memory ({where})", f"{est.peak_gpu_bytes / GIB:.1f} GiB",
                  help=f"weights {est.weights_bytes / GIB:.1f} GiB + KV cache {est.kv_cache_bytes / GIB:.2f} GiB"
                       f"{copies} + the frames' pixels {est.pixel_bytes / GIB:.2f} GiB + activations of one prefill "
                       f"chunk of {est.prefill_chunk_tokens:,} tokens (setting `prefill_chunk_tokens`), an estimate")
        source = {"config": " (size read from the loaded model)", "name": "",
                  "assumed": " (model size not in its name: 4B assumed)"}[choice.size_from]
        st.caption(f"Estimated for Qwen3-VL-{size.upper()} at {est.precision}{source}"
                   f"{f' on {plain(gpu_name)}' if gpu_name else ''}. Nothing has run yet.")
        if est.fits is False:
            words = choice.memory.words() if choice.memory is not None else "GPU memory"
            st.warning(f"This plan needs about {est.peak_gpu_bytes / GIB:.1f} GiB but "
                       f"{(choice.usable_bytes or 0) / GIB:.1f} GiB of {plain(words)} can be used: it will likely run "
                       "out of memory. Lower the frames or the pixels per frame"
                       + (", or use the plan chosen for this machine." if choice is not auto else
                          ", use a smaller model, or quantise it (setting `quantization`)."))
        for w in est.warnings:
            if not w.startswith("no GPU found") and w != est.fit_message:
                st.caption(f"Note: {plain(w)}")
    if auto is not None:
        if choice is not auto:
            st.caption(f"You changed the plan. The one chosen for this machine: {auto.estimate.describe()}.")
            st.button("Use the plan chosen for this machine", key="video_plan_auto", on_click=_use_chosen)
        with st.expander("Why this plan" if choice is auto else "Why the plan chosen for this machine",
                         expanded=choice is auto):
            for reason in auto.reasons:
                st.caption(reason)

# ---------------------------------------------------------------- analysis job
st.subheader("Analysis")
picked = [s for s in STAGES if st.checkbox(STAGE_NAMES[s], value=True, key=f"video_stage_{s}",
                                           persist_state="session")]
stages = tuple(picked)
if info.has_audio:
    hear = st.checkbox("Speech (transcribes the sound)", value=True, key="video_stage_speech", persist_state="session",
                       help="What is said, with times: a lane on the timeline, a transcript beside the player, and the "
                            "speech given to the model with questions and chapters.")
else:  # its own key: the choice made for a video with sound is kept for the next one
    hear = st.checkbox("Speech (transcribes the sound)", value=False, key="video_stage_speech_silent", disabled=True,
                       help="This video has no sound to transcribe.")
hearing = info.has_audio and transcription_running(stored)
jkey = analysis_key(sha, stages, plan) if plan is not None else None
analysis = None
job = jobs.get(jkey) if jkey else None
running = job is not None and job.state is JobState.RUNNING
# the analysis this session started on this video, with the choices of then: shown while it runs, even when the
# choices above have changed since (it reattaches after a page change whatever they are now)
started = st.session_state.get("video_job_of", {}).get(sha)
other = jobs.get(started) if started and started != jkey else None
other_running = other is not None and other.state is JobState.RUNNING

if stages and plan is not None and not running:
    try:
        analysis = video.cached_analysis(stored.path, sha, stages, plan)
    except VideoError as exc:
        st.error(plain(exc))
if analysis is None and job is not None and job.state is JobState.DONE:
    analysis = job.result

cols = st.columns([1, 3])
label = "Analyze again" if analysis is not None or (not stages and transcript is not None) else "Analyze"
can_see = bool(stages) and plan is not None and not running  # the events of the frames can be looked for
can_hear = hear and not hearing  # the speech can be transcribed
if cols[0].button(label, type="primary", key="video_analyze", disabled=not (can_see or can_hear),
                  icon=":material/play_arrow:"):
    if can_see:
        started_job = video.start_analysis(stored.path, sha, stages, plan, f"Analysing {stored.name}")
        track_job(started_job.key, "video", stored)
        st.session_state["video_job_of"] = {**st.session_state.get("video_job_of", {}), sha: started_job.key}
    if can_hear and (transcript is None or not transcript.complete):
        start_transcription(stored, "video")
    st.rerun()
if not stages and not hear:
    cols[1].caption("Choose at least one kind of event to look for.")
elif analysis is None and not running:
    cols[1].caption("Runs in the background; what is finished is saved, so a cancelled or interrupted run resumes.")
if other_running:
    st.caption("The analysis you started with other choices is still running:")
    job_panel(started, stored=stored)
state = job_panel(jkey, stored=stored) if jkey else None
if info.has_audio:
    speech_job_panel(stored)
if state is JobState.FAILED and job is not None and job.exception is not None and not isinstance(job.exception,
                                                                                              VideoError):
    st.caption("If the file plays elsewhere, re-export it as mp4 (H.264) and try again.")

# ---------------------------------------------------------------- transcript beside the player
if transcript is not None:
    with left:
        transcript_panel(stored, transcript, key="video")

# ---------------------------------------------------------------- timeline
answers: list[Event] = talk.events()  # the times the conversation's answers named
said: list[Event] = speech_events(transcript)  # one per segment of the transcript (none without one)
if analysis is not None or said:
    events = (list(analysis.events) if analysis is not None else []) + answers + said
    st.session_state["video_events"] = events
    counts: dict[str, int] = {}
    for e in events:
        counts[lane_title(e.kind)] = counts.get(lane_title(e.kind), 0) + 1
    st.markdown("**Timeline** · " + " · ".join(f"{k}: {v}" for k, v in counts.items()) if events else "**Timeline**")
    for w in analysis.warnings if analysis is not None else []:
        st.caption(f"Note: {shown_text(w, stored)}")
    if not events:
        st.info("No events found: no scene cuts, motion or on-screen text were detected with these settings.")
    else:
        st.caption("Click an event (a bar or a diamond) to jump the player there; drag to zoom, use the slider under "
                   "the chart to move along, double-click to zoom out.")
        board = video.storyboard(sha)
        fig = timeline_figure(events, info.duration, thumbnails=board or None,
                              selected=st.session_state.get("video_selected"))
        st.plotly_chart(fig, key="video_timeline", on_select=_on_chart_select, selection_mode=("points", "box"),
                        config={"displaylogo": False})
        st.selectbox("Go to event", list(range(len(events))), index=None, key="video_event_pick",
                     on_change=_on_pick, placeholder="Choose an event to jump to",
                     format_func=lambda i: f"{clock(events[i].start)} · {lane_title(events[i].kind)} · "
                                           f"{' '.join(events[i].label.split())[:80]}")
        sel = st.session_state.get("video_selected")
        if sel is not None and 0 <= sel < len(events):
            ev = events[sel]
            st.markdown(f"**Selected:** {lane_title(ev.kind)} from {clock(ev.start)} to {clock(ev.end)}")
            st.text(ev.label)  # plain text: OCR and model text is never rendered as markup

            @st.cache_data(show_spinner="Taking the frames around it...", max_entries=32)
            def around(path: str, sha: str, t: float) -> list[tuple[float, bytes]]:
                from core.library.frames import frames_around

                return frames_around(VideoInfo.from_dict(probe(path, sha)), t)

            try:
                frames = around(stored.path, sha, ev.start)
            except VideoError as exc:
                frames = []
                st.caption(f"No frames: {shown_text(exc, stored)}")
            if frames:
                fc = st.columns(len(frames))
                for c, (t, jpg) in zip(fc, frames):
                    c.image(jpg, caption=clock(t))
            if clip_buttons is not None:
                with st.expander("Export this stretch"):
                    clip_buttons(stored.path, [ev], key="video_clip_selected", name=stored.name, input_hash=sha)
elif not running and not other_running and not hearing:
    st.info("Press **Analyze** to find scene cuts, motion and on-screen text. The timeline appears here.")

# ---------------------------------------------------------------- questions: one conversation per video
def _seek_answer(t: float) -> None:
    seek_to(sha, t)
    st.session_state["video_selected"] = None


def _submit() -> None:
    """The Ask button: the question becomes this run's pending turn and the box empties for the next one."""
    question = str(st.session_state.get("video_question") or "").strip()
    if question:
        st.session_state["video_pending"] = (sha, question, bool(st.session_state.get("video_refine", True)))
    st.session_state["video_question"] = ""


def _new_conversation() -> None:
    video.new_conversation(sha)
    st.session_state.pop("video_pending", None)


def _answer_times(talk_id: str, n: int, events: list[Event]) -> None:
    """The times an answer names, as buttons that move the player there."""
    if not events:
        return
    with st.container(horizontal=True):
        for k, e in enumerate(events):
            flag = (e.detail or {}).get("flag")
            doubt = f" (doubtful: {plain(flag)})" if flag else ""
            st.button(f"▶ {clock(e.start)}{doubt}", key=f"video_t_{talk_id}_{n}_{k}", on_click=_seek_answer,
                      args=(e.start,), help="Move the player to this moment")


def _turn_footer(talk_id: str, n: int, events: list[Event], warnings: list[str], meta: str | None,
                 sources: list | None = None) -> None:
    """Under an answer: its times and whether it was seen or heard; for the latest answer also its notes, what it
    cost and the clip export."""
    _answer_times(talk_id, n, events)
    sources_caption(sources)
    for w in warnings:
        st.caption(shown_text(w, stored))
    if meta:
        st.caption(meta)
        if events and clip_buttons is not None:
            with st.expander("Export the moments it names"):
                clip_buttons(stored.path, events, key=f"video_clip_{talk_id}_{n}", name=stored.name, input_hash=sha)


def _meta(detail: dict, seconds: float) -> str:
    return (f"{detail.get('frames_seen', 0)} frames seen · {seconds:.1f} s"
            + (" · reused the video's cached prefix" if detail.get("reused_prefix") else ""))


st.subheader("Ask about the video")
if transcript is not None and transcript.segments:
    st.caption("What is said around the times a question asks about (or, without a time, what fits) is given to the "
               "model with the frames; each answer says whether its evidence was seen or heard.")
if model_ready(settings, "Questions"):
    pending = st.session_state.pop("video_pending", None)
    if pending is not None and pending[0] != sha:
        pending = None
    asked_n = len(talk.turns) + (pending is not None)
    if asked_n:
        st.caption(f"Conversation about {plain(stored.name)}: {asked_n} question(s). Earlier questions and "
                   "answers are given to the model with each new one; a click on a time moves the player there.")
    for n, turn in enumerate(talk.turns):
        latest = pending is None and n == len(talk.turns) - 1
        with st.chat_message("assistant"):
            st.caption(f"Answer to: {plain(turn.question)}")
            st.markdown(safe_markdown(turn.answer) if turn.answer.strip() else "_(the model returned no text)_")
            _turn_footer(talk.id, n, turn.answer_events(), turn.warnings if latest else [],
                         _meta(turn.detail, turn.seconds) if latest else None, turn.detail.get("sources"))
    slot = st.container()  # the answer being written goes here, under the earlier ones and above the box
    question = st.text_input("Question", key="video_question", persist_state="session",
                             placeholder="e.g. What happens at 1:30? When does the speaker show the chart?")
    refine = st.toggle("Refine the times it names (a second, closer look)", value=True, key="video_refine",
                       persist_state="session")
    with st.container(horizontal=True):
        st.button("Ask", key="video_ask", disabled=not question.strip() or plan is None or pending is not None,
                  icon=":material/send:", on_click=_submit, type="primary")
        st.button("New conversation", key="video_new_conversation", disabled=not talk.turns,
                  on_click=_new_conversation, icon=":material/add_comment:",
                  help="Start afresh: the model no longer sees the questions asked so far (they stay stored)")
    if pending is not None and plan is not None:
        _, asked, refine_it = pending
        with slot, st.chat_message("assistant"):
            st.caption(f"Answer to: {plain(asked)}")
            box = st.empty()
            result = None
            try:
                qa = video.questions(stored.path, plan, sha, info)
                stream_answer(video.stream_turn(qa, sha, asked, params, refine=refine_it), box,
                              waiting="Looking at the video…")
                result = qa.last_result
            except MemoryError:
                st.error("Out of memory: lower the frames per second or max frames above, or use a smaller model.")
            except Exception as exc:  # noqa: BLE001 - any model failure is shown; the app keeps running
                st.error(f"The question could not be answered: {shown_text(exc, stored)}")
            if result is not None:
                _turn_footer(talk.id, len(talk.turns), result.events, result.warnings,
                             _meta({"frames_seen": result.frames_seen, "reused_prefix": result.reused_prefix},
                                   result.seconds), result.sources)
