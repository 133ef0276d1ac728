"""Showing a background job: progress bar, ETA, cancel; refreshes itself while the job runs."""

from __future__ import annotations

from typing import Any, Callable

import streamlit as st

from core.jobs import JobState, format_eta, registry
from ui.safe import plain


def job_panel(key: str, on_done: Callable[[], None] | None = None, every_s: float = 1.0,
              stored: Any = None) -> JobState | None:
    """Draw the job `key` (if any) and refresh it every `every_s` while it runs; rerun the page once it ends.

    `stored`: the file the job works on (a core.files StoredFile); its messages then name it by the user's file
    name, never by the server's copy of it. Returns the job's state when drawn (None when there is no such job).
    """
    job = registry().get(key)
    if job is None:
        return None
    snap = job.snapshot()
    if snap.active:
        _live(key, every_s, stored)
        return JobState.RUNNING
    if snap.state is JobState.FAILED:
        st.error(f"{plain(snap.title)} failed: {_words(snap.error, stored)}")
    elif snap.state is JobState.CANCELLED:
        st.warning(f"{plain(snap.title)} was cancelled. What was finished is saved: run it again to resume from "
                   "there.")
    return snap.state


def _words(text: Any, stored: Any) -> str:
    """`text` safe for Markdown, the file named as the user knows it."""
    if stored is None:
        return plain(text)
    from ui.files import shown_text

    return shown_text(text, stored)


def _live(key: str, every_s: float, stored: Any = None) -> None:
    @st.fragment(run_every=every_s)
    def panel() -> None:
        job = registry().get(key)
        if job is None:
            return
        snap = job.snapshot()
        if not snap.active:
            # the job ended between two refreshes: redraw the whole page with its results
            st.rerun(scope="app")
        with st.container(border=True):
            st.progress(snap.fraction,
                        text=f"{plain(snap.title)}: {snap.fraction * 100:.0f} % · {_words(snap.message, stored)}")
            cols = st.columns([3, 1])
            cols[0].caption(f"{format_eta(snap.eta_s)} · running for {snap.elapsed_s:.0f} s · runs in the background: "
                            "you can change pages or close the tab and come back.")
            if cols[1].button("Cancel", key=f"cancel_{key}", icon=":material/stop_circle:"):
                job.cancel()
                st.toast("Cancelling: what is finished is kept.")

    panel()
