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


def test_video_job_resumes_from_saved_stages(tmp_path) -> None:
    """A second run after a finished stage reads it from the cache (a restart resumes)."""
    from core.cache import ResultCache
    from core.jobs.video import analysis_key, analyze_work, is_cached
    from core.media import SamplingPlan
    from tests.pages.media import make_video

    video = make_video(tmp_path / "v.mp4", seconds=4)
    cache = ResultCache(tmp_path / "cache")
    from core.cache import hash_file

    sha = hash_file(video)
    reg = JobRegistry()
    assert not is_cached(cache, sha, ("scenes",))
    job = reg.submit(analysis_key(sha, ("scenes",), SamplingPlan()), "a",
                     analyze_work(str(video), sha, ("scenes",), SamplingPlan(), cache))
    assert job.wait(60) and job.state is JobState.DONE, job.error
    assert is_cached(cache, sha, ("scenes",))
    again = reg.submit("again", "b", analyze_work(str(video), sha, ("scenes", "motion"), SamplingPlan(), cache))
    assert again.wait(60) and again.result.from_cache["scenes"] is True and again.result.from_cache["motion"] is False
