"""pages/video.py driven headlessly: upload a made video, plan, analyse in the background, timeline, seek."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.pages.conftest import page, wait_job


def _upload(at: AppTest, data: bytes, name: str = "cuts.mp4") -> AppTest:
    at.file_uploader(key="video_upload").set_value((name, data, "video/mp4")).run()
    assert not at.exception, at.exception
    return at


def test_plan_shown_before_running_then_analysis_timeline_and_seek(app_env: Path, video_bytes: bytes) -> None:
    at = AppTest.from_file(page("video"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Video Q&A"
    assert any("Upload a video" in i.value for i in at.info)
    _upload(at, video_bytes)
    # the plan's cost is shown before anything runs: 6 s at 2 fps = 12 frames
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Frames"] == "12" and metrics["Effective fps"] == "2.00"
    assert int(metrics["Visual tokens"].replace(",", "")) > 0 and metrics["Peak memory (RAM)"].endswith("GiB")
    at.number_input(key="video_fps").set_value(1.0).run()
    assert {m.label: m.value for m in at.metric}["Frames"] == "6"
    # no model: the page says what questions need, and the rest works
    assert any("Questions need the model" in w.value for w in at.warning)
    assert at.get("video")[0].proto.start_time == 0

    at.checkbox(key="video_stage_text").uncheck().run()
    at.button(key="video_analyze").click().run()
    assert not at.exception, at.exception
    wait_job("video:")
    at.run()
    assert not at.exception, at.exception
    timeline = [m.value for m in at.markdown if m.value.startswith("**Timeline**")]
    assert timeline and "Scenes (shots): 3" in timeline[0] and "Motion: " in timeline[0]
    assert [c.key for c in at.get("plotly_chart")] == ["video_timeline"]

    # pick the second shot: the player seeks to 2 s and the frames around it are shown
    pick = at.selectbox(key="video_event_pick")
    second = next(i for i in pick.options if "Scenes (shots)" in i and i.startswith("0:02"))
    pick.set_value(pick.options.index(second)).run()
    assert not at.exception, at.exception
    assert at.get("video")[0].proto.start_time == 2
    assert any("Selected:" in m.value and "0:02.0" in m.value for m in at.markdown)
    assert len(at.get("image")) >= 4


def test_reopening_an_analysed_video_is_instant_and_bad_files_are_refused(app_env: Path, video_bytes: bytes) -> None:
    at = AppTest.from_file(page("video"), default_timeout=60).run()
    _upload(at, video_bytes)
    at.checkbox(key="video_stage_text").uncheck().run()
    at.checkbox(key="video_stage_motion").uncheck().run()
    at.button(key="video_analyze").click().run()
    wait_job("video:")
    # a new session (another user, or after a restart of the page) finds it in the cache: no job needed
    again = AppTest.from_file(page("video"), default_timeout=60).run()
    _upload(again, video_bytes)
    again.checkbox(key="video_stage_text").uncheck().run()
    again.checkbox(key="video_stage_motion").uncheck().run()
    assert any(m.value.startswith("**Timeline** · Scenes (shots): 3") for m in again.markdown)
    assert again.button(key="video_analyze").label == "Analyze again"

    bad = AppTest.from_file(page("video"), default_timeout=60).run()
    _upload(bad, b"this is not a video at all" * 10, "fake.mp4")
    assert any("fake.mp4 cannot be used" in e.value for e in bad.error)
