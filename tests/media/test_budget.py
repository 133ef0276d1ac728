"""The budget planner's token count equals the real processor's on the tiny Qwen3-VL."""

from __future__ import annotations

import pytest

from core.media import SamplingPlan, probe_video, sample_video
from core.media.budget import kv_bytes_per_token, plan_budget, weights_bytes
from core.vlm.types import user

PLANS = [
    SamplingPlan(fps=2.0),
    SamplingPlan(fps=1.0, start=1.0, end=5.0, total_pixels=32 * 32 * 2 * 40),
    SamplingPlan(fps=4.0, max_frames=10, min_pixels=32 * 32 * 4, max_pixels=32 * 32 * 12),
    SamplingPlan(fps=0.5, min_frames=5),
]


@pytest.mark.parametrize("plan", PLANS, ids=["default", "window-budget", "small-frames", "min-frames-odd"])
def test_token_count_equals_processor(tiny_engine, tiny_model_dir, cuts_video, plan):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(tiny_model_dir))
    info = probe_video(cuts_video)
    question = "What happens in this video?"
    est = plan_budget(info, plan, processor=processor, question=question, look_for_gpu=False)
    video = sample_video(info, plan)
    inputs = tiny_engine.build_inputs([user(video.to_video_part(plan), question)])
    ids = inputs["input_ids"][0]
    visual = int((ids == tiny_engine.model.config.video_token_id).sum())
    assert est.exact and est.frames == len(video.frames) and est.frames % 2 == 0
    assert est.visual_tokens == visual
    assert est.prompt_tokens == int(ids.shape[0])
    t, h, w = inputs["video_grid_thw"][0].tolist()
    assert (t, h * 16, w * 16) == (est.pairs, est.frame_height, est.frame_width)


def test_memory_figures_and_fit_warning(cuts_video):
    info = probe_video(cuts_video)
    est = plan_budget(info, SamplingPlan(), model_size="8b", precision="bf16", gpu_memory_bytes=8 * 1024**3)
    assert est.fits is False and any("GiB" in w for w in est.warnings)
    assert est.weights_bytes == pytest.approx(16.33 * 1024**3, rel=0.02)
    assert kv_bytes_per_token("4b", "bf16") == 144 * 1024 and kv_bytes_per_token("2b", "bf16") == 112 * 1024
    assert est.kv_cache_bytes == (est.prompt_tokens + est.max_new_tokens) * 144 * 1024
    assert weights_bytes("4b", "4bit") < weights_bytes("4b", "8bit") < weights_bytes("4b", "bf16")
    big = plan_budget(info, SamplingPlan(), model_size="2b", gpu_memory_bytes=140 * 1024**3)
    assert big.fits is True
    assert est.timestamp_resolution == pytest.approx(1.0, rel=0.05)  # 2 / 2 fps
