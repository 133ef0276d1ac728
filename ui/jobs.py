"""Showing a background job: progress bar, ETA, cancel; refreshes itself while the job runs."""

from __future__ import annotations

from typing import Callable

import streamlit as st

from core.jobs import JobState, format_eta, registry
from ui.safe import plain


def job_panel(key: str, on_done: Callable[[], None] | None = None, every_s: float = 1.0) -> JobState | None:
    """Draw the job `key` (if any) and refresh it every `every_s` while it runs; rerun the page once it ends.

    Returns the job's state when drawn (None when there is no such job).
    """
    job = registry().get(key)
    if job is None:
        return None
    snap = job.snapshot()
    if snap.active:
        _live(key, every_s)
        return JobState.RUNNING
    if snap.state is JobState.FAILED:
        st.error(f"{plain(snap.title)} failed: {plain(snap.error)}")
    elif snap.state is JobState.CANCELLED:
        st.warning(f"{plain(snap.title)} was cancelled. What was finished is saved: run it again to resume from "
                   "there.")
    return snap.state


def _live(key: str, every_s: float) -> None:
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
                        text=f"{plain(snap.title)}: {snap.fraction * 100:.0f} % · {plain(snap.message)}")
            cols = st.columns([3, 1])
            cols[0].caption(f"{format_eta(snap.eta_s)} · running for {snap.elapsed_s:.0f} s · runs in the background: "
                            "you can change pages or close the tab and come back.")
            if cols[1].button("Cancel", key=f"cancel_{key}", icon=":material/stop_circle:"):
                job.cancel()
                st.toast("Cancelling: what is finished is kept.")

    panel()
