"""Background jobs: progress and ETA, cancel, failures kept as messages, one job per key across callers."""

from __future__ import annotations

import threading

from core.jobs import JobRegistry, JobState, format_eta


def test_progress_eta_result_and_one_job_per_key() -> None:
    reg = JobRegistry()
    gate = threading.Event()
    step = threading.Event()

    def work(ctx):
        ctx.progress(0.0, "start")
        ctx.progress(0.5, "half way", "scenes")
        step.set()
        gate.wait(5)
        return 42

    job = reg.submit("k", "Test", work)
    assert step.wait(5)
    assert reg.submit("k", "Test again", work) is job  # a rerun or second tab sees the same job
    snap = job.snapshot()
    assert snap.active and snap.fraction == 0.5 and snap.message == "half way" and snap.stage == "scenes"
    assert snap.eta_s is not None and snap.eta_s >= 0
    gate.set()
    assert job.wait(5)
    snap = job.snapshot()
    assert (snap.state, snap.fraction, job.result) == (JobState.DONE, 1.0, 42)
    assert reg.submit("k", "Again", lambda ctx: 7) is not job  # a finished job of the key runs anew


def test_cancel_and_failure_are_states_not_crashes() -> None:
    reg = JobRegistry()

    def slow(ctx):
        while not ctx.cancel.wait(0.01):
            pass
        from core.media.errors import Cancelled

        raise Cancelled("stopped")

    job = reg.submit("c", "Cancellable", slow)
    job.cancel()
    assert job.wait(5) and job.state is JobState.CANCELLED and job.error is None
    bad = reg.submit("f", "Failing", lambda ctx: 1 / 0)
    assert bad.wait(5) and bad.state is JobState.FAILED and "division by zero" in bad.error
    assert [j.key for j in reg.running()] == []


def test_format_eta() -> None:
    assert format_eta(None) == "estimating time left"
    assert format_eta(12.4) == "about 12 s left"
    assert format_eta(80) == "about 1 min 20 s left"
    assert format_eta(3 * 3600 + 120) == "about 3 h 2 min left"
