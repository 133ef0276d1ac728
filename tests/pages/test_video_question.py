"""The video page's question box with the tiny model: the answer streams in, the time asked is used, a
follow-up reuses the video's cached prefix."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.pages.conftest import page


def test_ask_and_follow_up(app_env: Path, video_bytes: bytes, monkeypatch: pytest.MonkeyPatch,
                           tiny_model_dir: Path) -> None:
    monkeypatch.setenv("VLSCOPE_MODEL", str(tiny_model_dir))
    at = AppTest.from_file(page("video"), default_timeout=120).run()
    at.file_uploader(key="video_upload").set_value(("cuts.mp4", video_bytes, "video/mp4")).run()
    assert not at.exception, at.exception
    at.number_input(key="gen_max_new_tokens").set_value(6).run()
    at.slider(key="gen_temperature").set_value(0.0).run()
    at.toggle(key="video_refine").set_value(False).run()
    at.text_input(key="video_question").input("What happens at 0:03?").run()
    at.button(key="video_ask").click().run()
    assert not at.exception, at.exception
    assert any(c.value == "Answer to: What happens at 0:03?" for c in at.caption)
    first = next(c.value for c in at.caption if "frames seen" in c.value)
    assert "reused the video's cached prefix" not in first
    # a question without a time uses the whole-video overview, kept for follow-ups
    at.text_input(key="video_question").input("Describe the video").run()
    at.button(key="video_ask").click().run()
    at.text_input(key="video_question").input("And the colours?").run()
    at.button(key="video_ask").click().run()
    assert not at.exception, at.exception
    last = next(c.value for c in at.caption if "frames seen" in c.value)
    assert "reused the video's cached prefix" in last
