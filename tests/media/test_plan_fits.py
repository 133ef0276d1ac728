"""Plans that fit the device: the default plan of a video is the best one whose estimated peak fits the free
GPU memory (or RAM on the CPU), with the reasons in words; `lower_plan` is one step down the same ladder."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.app import Runtime
from core.cache import ResultCache
from core.jobs import JobRegistry
from core.media import SamplingPlan, probe_video, schedule_frames
from core.media import budget
from core.media.budget import (
    FRAME_LADDER,
    GIB,
    device_memory,
    fit_plan,
    ladder_plan,
    lower_plan,
    model_bytes,
    plan_budget,
    size_from_config,
)
from core.settings import Settings
from tests.media.conftest import run_ffmpeg

CARD_24 = 24 * GIB


@pytest.fixture(scope="module")
def ten_minutes_720p(media_dir: Path) -> Path:
    """A 10-minute 1280x720 H.264 file (5 fps of a flat colour: quick to make; the plan only reads the probe)."""
    out = media_dir / "ten_minutes_720p.mp4"
    if not out.exists():
        run_ffmpeg("-f", "lavfi", "-i", "color=c=blue:size=1280x720:rate=5:duration=600", "-c:v", "libx264",
                   "-preset", "ultrafast", "-g", "10", "-pix_fmt", "yuv420p", str(out))
    return out


def _estimate(info, plan: SamplingPlan, memory: int | None = None, **kw):
    return plan_budget(info, plan, model_size=kw.pop("size", "4b"), precision=kw.pop("precision", "bf16"),
                       gpu_memory_bytes=memory, look_for_gpu=False, **kw)


def test_ten_minutes_of_720p_on_a_24_gib_card_get_a_plan_that_fits(ten_minutes_720p: Path) -> None:
    info = probe_video(ten_minutes_720p)
    usable = int(CARD_24 * 0.9)
    standard = _estimate(info, SamplingPlan(), usable)
    # the standard plan: 768 frames of 120 tokens per pair (the per-frame floor beats the total budget)
    assert (standard.frames, standard.visual_tokens_per_pair, standard.visual_tokens) == (768, 120, 46_080)
    # measured on an H200 with the 4B bf16: 24-33 GB peak for this plan; the estimate lands in that range
    assert 24e9 <= standard.peak_gpu_bytes <= 33e9
    assert standard.fits is False and "GiB of GPU memory can be used" in standard.fit_message

    plan, est, reasons = fit_plan(info, CARD_24, "4b", "bf16")
    assert est.fits is True and est.peak_gpu_bytes <= usable
    assert 256 <= est.frames < 768 and est.frames == schedule_frames(info, plan).frames
    assert _estimate(info, plan, usable).peak_gpu_bytes == est.peak_gpu_bytes  # the plan really gives that estimate
    # the next frame count up does not fit: nothing with more frames was left on the table
    up = FRAME_LADDER[FRAME_LADDER.index(est.frames) - 1]
    assert _estimate(info, ladder_plan(plan, up), usable).fits is False
    assert reasons[0] == (
        f"The standard plan, 768 frames of 480×256 (46,080 visual tokens), would need about "
        f"{standard.peak_gpu_bytes / GIB:.1f} GiB, but 21.6 GiB of the 24.0 GiB of free GPU memory can be used "
        f"(setting `plan_memory_fraction` = 0.9): {est.frames} frames of 480×256 ({est.visual_tokens:,} visual "
        f"tokens) chosen (about {est.peak_gpu_bytes / GIB:.1f} GiB).")


def test_an_h200_keeps_the_standard_plan(ten_minutes_720p: Path) -> None:
    info = probe_video(ten_minutes_720p)
    plan, est, reasons = fit_plan(info, 140 * GIB, "4b", "bf16", memory_words="GPU memory (NVIDIA H200)")
    assert plan == SamplingPlan() and est.frames == 768 and est.fits is True
    assert reasons == [f"The standard plan, 768 frames of 480×256 (46,080 visual tokens), needs about "
                       f"{est.peak_gpu_bytes / GIB:.1f} GiB; 126.0 GiB of the 140.0 GiB of free GPU memory "
                       "(NVIDIA H200) can be used (setting `plan_memory_fraction` = 0.9): it fits."]


def test_smaller_cards_and_bigger_models_get_fewer_frames_and_the_next_plan_up_is_named(ten_minutes_720p) -> None:
    info = probe_video(ten_minutes_720p)
    _, on_16, reasons = fit_plan(info, 16 * GIB, "4b", "bf16")
    _, on_24, _ = fit_plan(info, CARD_24, "4b", "bf16")
    _, big_on_24, _ = fit_plan(info, CARD_24, "8b", "bf16")
    assert on_16.frames < on_24.frames and big_on_24.visual_tokens < on_24.visual_tokens
    assert on_16.fits and big_on_24.fits
    bigger = next(r for r in reasons if r.startswith("The next bigger plan"))
    assert bigger.startswith("The next bigger plan, 384 frames of 480×256 (23,040 visual tokens), would need about ")
    assert float(bigger.split("about ")[1].split(" GiB")[0]) > 16 * 0.9  # and it would not fit


def test_the_weights_alone_too_big_keep_the_standard_plan_and_say_why(ten_minutes_720p: Path) -> None:
    info = probe_video(ten_minutes_720p)
    plan, est, reasons = fit_plan(info, 8 * GIB, "4b", "bf16")
    assert plan == SamplingPlan() and est.fits is False
    assert "the model's weights alone take 8.3 GiB: no plan fits" in reasons[0] and "quantise" in reasons[0]


def test_ram_sizing_on_the_cpu(ten_minutes_720p: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = probe_video(ten_minutes_720p)
    # the real RAM reading
    ram = device_memory("cpu")
    assert ram.where == "RAM" and 0 < ram.free_bytes <= ram.total_bytes and ram.words() == "RAM"
    monkeypatch.setattr(budget, "_available_ram", lambda: (32 * GIB, 64 * GIB))
    assert device_memory("cpu").free_bytes == 32 * GIB
    assert device_memory("cpu", held_bytes=3 * GIB).free_bytes == 35 * GIB  # what the loaded model holds counts
    # fp32 weights of the 4B: 16.5 GiB; the decoded frames count in RAM too
    plan, est, reasons = fit_plan(info, 32 * GIB, "4b", "fp32", where="RAM")
    assert est.weights_bytes == int(4.438e9 * 4) and est.fits and est.peak_gpu_bytes <= 32 * GIB * 0.9
    assert 64 <= est.frames < 768
    up = FRAME_LADDER[FRAME_LADDER.index(est.frames) - 1]
    assert _estimate(info, ladder_plan(plan, up), int(32 * GIB * 0.9), precision="fp32", where="RAM").fits is False
    assert "of free RAM can be used" in reasons[0]
    on_gpu = _estimate(info, plan, precision="fp32")
    in_ram = _estimate(info, plan, precision="fp32", where="RAM")
    assert in_ram.peak_gpu_bytes - on_gpu.peak_gpu_bytes == est.frames * est.frame_width * est.frame_height * 3


def test_prefill_chunks_bound_the_activations(ten_minutes_720p: Path) -> None:
    info = probe_video(ten_minutes_720p)
    # chunks when the memory has no room for the whole prompt at once (as FeatureMemory.chunk_for), one pass else
    tight = 12 * GIB
    chunked = [_estimate(info, ladder_plan(SamplingPlan(), n), tight) for n in (768, 384)]
    whole = [_estimate(info, ladder_plan(SamplingPlan(), n), tight, prefill_chunk_tokens=0) for n in (768, 384)]
    assert chunked[0].prefill_chunk_tokens == 8192 and whole[0].prefill_chunk_tokens == whole[0].prompt_tokens
    roomy = _estimate(info, SamplingPlan(), 100 * GIB)
    assert roomy.prefill_chunk_tokens == roomy.prompt_tokens
    # bounded by one chunk: twice the frames add only the chunk's wider attention mask; the whole prompt at
    # once doubles with the frames
    assert chunked[0].activation_bytes < 1.25 * chunked[1].activation_bytes
    assert whole[0].activation_bytes > 1.8 * whole[1].activation_bytes > 3 * chunked[0].activation_bytes
    # one KV cache instead of two (prefix_cache_gb = 0) lowers the peak by about one KV cache
    one = _estimate(info, SamplingPlan(), tight, kv_copies=1)
    assert chunked[0].peak_gpu_bytes - one.peak_gpu_bytes >= 0.5 * chunked[0].kv_cache_bytes


def test_lower_plan_takes_fewer_frames_first_then_fewer_pixels_never_below_a_pair(ten_minutes_720p) -> None:
    info = probe_video(ten_minutes_720p)
    plan, est = SamplingPlan(), _estimate(info, SamplingPlan())
    frames = [est.frames]
    while est.frames > 2:
        lower = lower_plan(plan, est)
        nxt = _estimate(info, lower)
        assert nxt.peak_gpu_bytes < est.peak_gpu_bytes
        assert nxt.frame_width * nxt.frame_height <= est.frame_width * est.frame_height
        plan, est = lower, nxt
        frames.append(est.frames)
    assert frames == [768, 512, 384, 256, 128, 64, 32, 16, 8, 4, 2]
    # two frames at the per-frame floor: already the smallest, the plan comes back unchanged
    assert (est.frames, est.visual_tokens_per_pair) == (2, 120) and lower_plan(plan, est) == plan

    # 20 s: 40 frames at a high resolution. Frames go down first at no more pixels each, then the pixels
    window = SamplingPlan(end=20.0)
    plan, est = window, _estimate(info, window)
    assert (est.frames, est.frame_width, est.frame_height) == (40, 1056, 576)
    steps = []
    while True:
        lower = lower_plan(plan, est)
        if lower == plan:
            break
        nxt = _estimate(info, lower)
        assert nxt.peak_gpu_bytes < est.peak_gpu_bytes and nxt.frames >= 2 and lower.end == 20.0
        plan, est = lower, nxt
        steps.append((est.frames, est.visual_tokens_per_pair))
    assert [f for f, _ in steps] == [32, 16, 8, 4, 2] + [2] * (len(steps) - 5)
    assert steps[4][1] == 594 and steps[-1][1] == 120  # the same pixels down to 2 frames, then down to the floor
    assert [t for _, t in steps[4:]] == sorted((t for _, t in steps[4:]), reverse=True)


def test_the_model_size_is_read_from_a_loaded_models_config() -> None:
    from transformers import Qwen3VLConfig

    from core.vlm.shapes import qwen3_vl_config_dict

    for size in ("2b", "4b", "8b"):
        assert size_from_config(Qwen3VLConfig(**qwen3_vl_config_dict(size))) == size
    assert size_from_config(None) is None


def test_the_service_fits_to_the_ram_of_the_cpu_and_says_so(ten_minutes_720p: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "_available_ram", lambda: (32 * GIB, 64 * GIB))
    settings = Settings(cache_dir=tmp_path / "cache", device="cpu")
    with Runtime(settings, cache=ResultCache(tmp_path / "cache"), jobs=JobRegistry()) as rt:
        info = probe_video(ten_minutes_720p)
        choice = rt.video.default_plan(info)
        assert choice.automatic and choice.where == "RAM" and choice.memory.free_bytes == 32 * GIB
        assert choice.estimate.precision == "fp32" and choice.estimate.fits and choice.estimate.frames < 768
        assert choice.reasons[0] == ("The model is set to run on the CPU (setting `device`), so plans are fitted to "
                                     "the RAM available (32.0 GiB).")
        assert rt.video.plan(info).plan == choice.plan  # nothing chosen: the default plan
        # the user's own plan is checked against the same memory
        mine = rt.video.plan(info, fps=2.0, max_frames=768)
        assert mine.estimate.fits is False and "GiB of RAM can be used" in mine.estimate.fit_message
        # the widgets' values of the default plan give the same plan back
        again = rt.video.plan(info, fps=choice.plan.fps, max_frames=choice.plan.max_frames,
                              max_pixels=choice.frame_pixels)
        assert again.plan == choice.plan and again.estimate.peak_gpu_bytes == choice.estimate.peak_gpu_bytes


def test_a_remote_engine_keeps_the_standard_plan(ten_minutes_720p: Path, tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path / "cache", engine="remote")
    with Runtime(settings, cache=ResultCache(tmp_path / "cache"), jobs=JobRegistry()) as rt:
        choice = rt.video.default_plan(probe_video(ten_minutes_720p))
        assert choice.plan == SamplingPlan() and choice.where == "server" and choice.estimate.fits is None
        assert "remote server" in choice.reasons[0]


def test_a_loaded_model_counts_what_it_holds(tiny_engine, tmp_path: Path, ten_minutes_720p: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(budget, "_available_ram", lambda: (32 * GIB, 64 * GIB))
    settings = Settings(cache_dir=tmp_path / "cache", model=tiny_engine.settings.model)
    rt = Runtime(settings, cache=ResultCache(tmp_path / "cache"), engine=tiny_engine, jobs=JobRegistry())
    try:
        choice = rt.video.default_plan(probe_video(ten_minutes_720p))
        held = model_bytes(tiny_engine.model)
        assert choice.memory.free_bytes == 32 * GIB + held and "the loaded model holds" in choice.memory.source
        # the tiny model's shape is none of the released sizes: its own entry, from its config
        assert choice.size_from == "config" and choice.model_size == size_from_config(tiny_engine.model.config)
    finally:
        rt.cache.close()
