"""pages/video.py plans what fits the machine: the reasons shown, the plan lowered when RAM is short, a warning
on the CPU for a plan that will not fit (it used to be GPU-only), and the way back to the chosen plan."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.media import SamplingPlan, probe_video
from core.media import budget
from core.media.budget import GIB, plan_budget
from tests.pages.conftest import page
from tests.pages.media import make_video


def _open(data: bytes, name: str = "clip.mp4") -> AppTest:
    at = AppTest.from_file(page("video"), default_timeout=60).run()
    at.file_uploader(key="video_upload").set_value((name, data, "video/mp4")).run()
    assert not at.exception, at.exception
    return at


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_the_page_shows_why_it_chose_the_plan(app_env: Path, video_bytes: bytes,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLSCOPE_DEVICE", "cpu")
    monkeypatch.setattr(budget, "_available_ram", lambda: (64 * GIB, 64 * GIB))
    at = _open(video_bytes)
    assert {m.label: m.value for m in at.metric}["Frames"] == "12"
    captions = _captions(at)
    assert ("The model is set to run on the CPU (setting `device`), so plans are fitted to the RAM available "
            "(64.0 GiB).") in captions
    fits = next(c for c in captions if c.startswith("The standard plan"))
    assert fits.startswith("The standard plan, 12 frames of 320×192 (360 visual tokens), needs about ")
    assert fits.endswith("; 57.6 GiB of the 64.0 GiB of free RAM can be used (setting `plan_memory_fraction` = 0.9): "
                         "it fits.")
    assert [e.label for e in at.expander] == ["Why this plan"]
    assert all(b.key != "video_plan_auto" for b in at.button)  # nothing to go back to
    # the widgets start at the chosen plan
    assert at.number_input(key="video_fps").value == 2.0 and at.number_input(key="video_max_frames").value == 768


def test_short_ram_lowers_the_plan_warns_for_a_bigger_one_and_goes_back(app_env: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    video = make_video(tmp_path / "half-minute.mp4", seconds=30)
    monkeypatch.setenv("VLSCOPE_DEVICE", "cpu")
    monkeypatch.setenv("VLSCOPE_MODEL", str(tmp_path / "Qwen3-VL-2B-Instruct"))  # the size is read from the name
    standard = plan_budget(probe_video(video), SamplingPlan(), "2b", "fp32", look_for_gpu=False, where="RAM")
    assert standard.frames == 60
    free = int(standard.peak_gpu_bytes * 0.97 / 0.9)  # the standard plan misses by 3%
    monkeypatch.setattr(budget, "_available_ram", lambda: (free, 64 * GIB))

    at = _open(video.read_bytes())
    assert {m.label: m.value for m in at.metric}["Frames"] == "32"
    chosen = next(c for c in _captions(at) if c.startswith("The standard plan"))
    assert chosen.startswith(f"The standard plan, 60 frames of 320×192 (1,800 visual tokens), would need about "
                             f"{standard.peak_gpu_bytes / GIB:.1f} GiB, but ")
    assert "of free RAM can be used" in chosen and "32 frames of 320×192 (960 visual tokens) chosen" in chosen
    assert any("Estimated for Qwen3-VL-2B at fp32" in c for c in _captions(at))
    assert not [w for w in at.warning if "This plan needs" in w.value]

    # asking for the standard plan on this CPU: the page says it will not fit in RAM
    at.number_input(key="video_max_frames").set_value(768).run()
    assert {m.label: m.value for m in at.metric}["Frames"] == "60"
    warning = next(w.value for w in at.warning if "This plan needs" in w.value)
    assert f"needs about {standard.peak_gpu_bytes / GIB:.1f} GiB" in warning and "GiB of RAM can be used" in warning
    assert any(c.startswith("You changed the plan. The one chosen for this machine: 32 frames") for c in _captions(at))

    at.button(key="video_plan_auto").click().run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Frames"] == "32"
    assert at.number_input(key="video_max_frames").value == 32
    assert not [w for w in at.warning if "This plan needs" in w.value]
