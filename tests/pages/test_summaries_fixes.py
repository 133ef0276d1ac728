"""The Summaries page's defects, fixed: right after captioning it no longer asks to caption first, its timeline
can be clicked and a player is there, progress moves inside a one-chunk video; and both video pages name a file
by its own name, never by the server's copy of it (cache/uploads/<hash>.mp4)."""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.app import Runtime
from core.cache import ResultCache, hash_file
from core.jobs import JobRegistry
from core.settings import Settings
from tests.pages.conftest import page, wait_job
from tests.pages.media import make_video


class Recorder:
    """What a background job's context offers the work (progress, cancel), with every report kept."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.reports: list[tuple[float, str, str]] = []

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def progress(self, fraction: float, message: str = "", stage: str = "") -> None:
        self.reports.append((fraction, message, stage))


def test_progress_moves_while_the_only_chunk_is_captioned(tiny_model_dir: Path, tmp_path: Path) -> None:
    from core.analysis.summary import CaptionOptions

    rt = Runtime(Settings(model=str(tiny_model_dir), cache_dir=tmp_path / "cache"),
                 cache=ResultCache(tmp_path / "cache"), jobs=JobRegistry())
    try:
        video = make_video(tmp_path / "v.mp4", seconds=4)
        info = rt.video.probe(video, hash_file(video))
        options = CaptionOptions(chunk_s=60.0, overlap_s=5.0, fps=1.0, max_new_tokens=64)
        ctx = Recorder()
        done = rt.video.summary_work(video, hash_file(video), info, options, 64)(ctx)
        assert len(done.captions.chunks) == 1
        during = [(f, m) for f, m, s in ctx.reports if s == "captions" and 0.0 < f < 0.8]
        assert during, ctx.reports  # before the fix: 0 % until the one chunk was done, then 80 %
        assert all(a <= b for a, b in zip([f for f, _ in during], [f for f, _ in during][1:]))
        assert any(re.search(r"^captioning 00:00-00:04: \d+ of at most 64 tokens written$", m) for _, m in during)
        assert ctx.reports[-1][0] == 1.0
        # the tiny model's captions hold no events: said as what happened, not "caption the video first"
        assert done.summary.problems == [
            "No chapters or summary: the model captioned the video (1 chunk), but its captions held no timestamped "
            "events to make them from. A test model with random weights always gives this; with real weights, allow "
            "more tokens per chunk or use shorter chunks and run it again."]
    finally:
        rt.cache.close()
        rt.close()


def test_after_captioning_the_page_says_what_was_found_and_has_a_player_and_a_clickable_timeline(
        app_env: Path, video_bytes: bytes, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> None:
    monkeypatch.setenv("VLSCOPE_MODEL", str(tiny_model_dir))
    at = AppTest.from_file(page("summaries"), default_timeout=120).run()
    at.file_uploader(key="summary_upload").set_value(("talk.mp4", video_bytes, "video/mp4")).run()
    assert not at.exception, at.exception
    assert len(at.get("video")) == 1  # the player, before anything ran
    at.button(key="summary_cpu").click().run()
    wait_job("video:")
    at.run()
    at.number_input(key="summary_tokens").set_value(64).run()
    at.button(key="summary_run").click().run()
    wait_job("summary:", timeout=120)
    at.run()
    assert not at.exception, at.exception
    notes = [c.value for c in at.caption if c.value.startswith("Note: ")]
    assert not any("caption the video first" in n for n in notes)
    assert any("the model captioned the video (1 chunk), but its captions held no timestamped events" in n
               for n in notes)
    assert any(c.value.startswith("No events found") for c in at.caption)
    chart = at.get("plotly_chart")[0]
    assert list(chart.proto.selection_mode), "the timeline takes clicks"
    assert any("Click an event" in c.value for c in at.caption)


def test_a_file_that_cannot_be_read_is_named_by_its_name(app_env: Path) -> None:
    junk = b"this is not a video at all" * 10
    sha = hashlib.sha256(junk).hexdigest()
    for name, key in (("video", "video"), ("summaries", "summary")):
        at = AppTest.from_file(page(name), default_timeout=60).run()
        at.file_uploader(key=f"{key}_upload").set_value(("holiday.mp4", junk, "video/mp4")).run()
        errors = [e.value for e in at.error]
        assert errors and errors[0].startswith("holiday.mp4 cannot be used: holiday.mp4 "), errors
        shown = " ".join(errors)
        assert "uploads" not in shown and sha[:16] not in shown and "cache/" not in shown
