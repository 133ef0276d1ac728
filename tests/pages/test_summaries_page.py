"""pages/summaries.py without a model: the CPU timeline works and the page says what the model adds."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.pages.conftest import page, wait_job


def test_without_model_cpu_timeline_and_what_the_model_adds(app_env: Path, video_bytes: bytes) -> None:
    at = AppTest.from_file(page("summaries"), default_timeout=60).run()
    assert not at.exception, at.exception
    at.file_uploader(key="summary_upload").set_value(("talk.mp4", video_bytes, "video/mp4")).run()
    assert not at.exception, at.exception
    assert any("Captions, chapters and summaries need the model" in w.value for w in at.warning)
    assert any("With the model this page adds" in c.value for c in at.caption)
    at.button(key="summary_cpu").click().run()
    wait_job("video:")
    at.run()
    assert not at.exception, at.exception
    assert any(m.value.startswith("**Timeline** · Scenes (shots): 3") for m in at.markdown)
