"""Every architecture VLScope runs, through the same engine: Qwen3-VL dense and MoE, Qwen3.5 dense and MoE.

Each is a tiny random model of the real architecture (core.vlm.tiny) saved to a folder and loaded the way a user's
model folder is (LocalEngine -> AutoProcessor + AutoModelForImageTextToText). The tests check what a user sees: the
`<t seconds>` times in the prompt, token counts, the decoding path the Home page names (with its reason), answers
equal between paths (fast vs plain where the fast step covers the architecture; a kept prefix vs a full prefill;
a prefix read back from disk; stored visual features), and the planner's memory figures against the real caches.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cache import ResultCache
from core.media.budget import (decode_bytes_per_token, kv_bytes_per_token, plan_budget, planner_size, size_from_config,
                               state_bytes, weights_bytes)
from core.media.probe import VideoInfo
from core.media.sampling import SamplingPlan
from core.settings import Settings
from core.vlm import GenerationParams, ImagePart, VideoPart, user
from core.vlm import shapes as S
from core.vlm.local import LocalEngine
from core.vlm.prefix import map_cache
from core.vlm.tiny import ARCHITECTURES, build_tiny_model

GREEDY = GenerationParams.greedy_defaults
CLASSES = {"qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
           "qwen3_5": "Qwen3_5ForConditionalGeneration", "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration"}
FAST = ("qwen3_vl", "qwen3_vl_moe")  # the lean decode step covers these
HYBRID = ("qwen3_5", "qwen3_5_moe")  # Gated DeltaNet layers: plain generate


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {a: build_tiny_model(tmp_path_factory.mktemp(f"tiny-{a}"), arch=a) for a in ARCHITECTURES}


def _engine(folder: Path, cache: Path, store: object | None = None, **kw: object) -> LocalEngine:
    engine = LocalEngine(Settings(model=str(folder), cache_dir=cache, **kw), feature_store=store)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def engines(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Per architecture: (plain engine, engine with fast decoding asked for), both loaded from the folder."""
    made = {a: (_engine(f, tmp_path_factory.mktemp(f"c-{a}"), fast_decode="off"),
                _engine(f, tmp_path_factory.mktemp(f"f-{a}"), fast_decode="on")) for a, f in folders.items()}
    yield made
    for pair in made.values():
        for e in pair:
            e.close()


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 96, 3), dtype=np.uint8)


def _video(fps: float = 30.0, seconds: tuple[float, ...] = (10, 11, 20, 21, 30, 31), key: str | None = None,
           seed: int = 0) -> VideoPart:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in seconds]
    return VideoPart(frames, [round(s * fps) for s in seconds], source_fps=fps, total_frames=round(40 * fps),
                     cache_key=key)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_loads_from_its_folder_through_the_users_path(engines, arch: str) -> None:
    plain, _ = engines[arch]
    info = plain.info()
    assert info.loaded and info.error is None and (info.device, info.dtype) == ("cpu", "fp32")
    assert type(plain.model).__name__ == CLASSES[arch]
    assert type(plain.processor).__name__ == "Qwen3VLProcessor"  # transformers' processor for all four
    assert plain.model.config.model_type == arch
    family = "Qwen3.5" if arch in HYBRID else "Qwen3-VL"
    assert info.architecture.startswith(family + (" MoE" if arch.endswith("moe") else ""))
    if arch in HYBRID:
        assert "3 Gated DeltaNet + 1 full-attention layers" in info.architecture
    if arch.endswith("moe"):
        assert "4 experts (2" in info.architecture


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_an_image_question_counts_its_visual_tokens(engines, arch: str) -> None:
    plain, _ = engines[arch]
    result = plain.generate([user(ImagePart(_image()), "Describe this image.")], GREEDY(8))
    assert result.metrics.visual_tokens == 6  # 64x96 -> 2 x 3 merged 32x32 patches
    assert result.prompt_tokens > 6 and 1 <= result.completion_tokens <= 8 and result.text


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("fps", [30.0, 25.0])
def test_a_video_question_has_the_real_second_timestamps_in_its_prompt(engines, arch: str, fps: float) -> None:
    plain, _ = engines[arch]
    part = _video(fps)
    inputs = plain.build_inputs([user(part, "What happens at 20 seconds?")])
    prompt = plain.processor.tokenizer.decode(inputs["input_ids"][0])
    # one `<t seconds>` per pair of frames: the mean of its two frames' times in the source (index / source fps)
    assert re.findall(r"<[0-9.]+ seconds>", prompt) == ["<10.5 seconds>", "<20.5 seconds>", "<30.5 seconds>"]
    assert part.pair_timestamps() == [10.5, 20.5, 30.5]
    result = plain.generate([user(part, "What happens at 20 seconds?")], GREEDY(6))
    assert result.metrics.visual_tokens == 3 * 4  # 3 frame pairs of 64x64: 2 x 2 merged patches each
    assert result.prompt_tokens == int(inputs["input_ids"].shape[1])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_decoding_path_and_its_reason_are_named(engines, folders, tmp_path: Path, arch: str) -> None:
    _, fast = engines[arch]
    decoding = fast.info().decoding
    if arch in FAST:
        assert decoding.startswith("fast: lean step, PyTorch kernels")
        assert ("2 MoE layers through transformers'" in decoding) == (arch == "qwen3_vl_moe")
    else:
        assert decoding.startswith("plain generate (Qwen3.5's Gated DeltaNet layers keep a recurrent state that the "
                                   "fast decoder's static KV cache and lean step do not hold")
        assert not fast.fast_decode_enabled
    auto = _engine(folders[arch], tmp_path)  # the default on a CPU: plain, and why
    try:
        assert auto.info().decoding == ("plain generate (fast decoding is for CUDA)" if arch in FAST else
                                        decoding.replace(")", "; fast decoding is also for CUDA only)"))
    finally:
        auto.close()


def _tokens(engine: LocalEngine, messages: list, n: int = 24) -> tuple[list[int], str]:
    stream = engine.stream(messages, GREEDY(n))
    result = stream.collect()
    return engine.processor.tokenizer(result.text, add_special_tokens=False)["input_ids"], result.metrics.decode_path


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_answers_are_the_same_on_the_fast_and_the_plain_path(engines, arch: str) -> None:
    plain, fast = engines[arch]
    for messages in ([user(ImagePart(_image(1)), "Describe this image.")], [user(_video(), "What happens?")]):
        want, path_plain = _tokens(plain, messages)
        got, path_fast = _tokens(fast, messages)
        assert path_plain == "plain"
        assert path_fast == ("static" if arch in FAST else "plain")  # Qwen3.5 stays on generate
        assert got == want and len(set(want)) > 3  # not one repeated token: a real comparison


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_kept_prefix_answers_like_a_full_prefill_and_holds_what_the_planner_counts(engines, arch: str) -> None:
    for engine in engines[arch]:
        engine.prefixes.clear()
        full = engine.generate([user(_video(seed=3), "When does the door close?")], GREEDY(16))
        first = engine.generate([user(_video(seed=3, key=f"clip-{arch}"), "When does the door close?")], GREEDY(16))
        again = engine.generate([user(_video(seed=3, key=f"clip-{arch}"), "When does the door close?")], GREEDY(16))
        assert first.text == full.text == again.text
        assert first.metrics.reused_prefix_tokens == 0 and again.metrics.reused_prefix_tokens > 0
        (kept,) = [k.prefix for k in engine.prefixes._items.values()]
        tokens = int(kept.input_ids.shape[1])
        assert again.metrics.reused_prefix_tokens == tokens
        # the kept bytes: K/V of the full-attention layers per token + the Gated DeltaNet layers' fixed state
        # (transformers 5.25+ also keeps a 0-d token counter in each linear-attention layer: 8 bytes, not planned)
        config = engine.model.config
        counters = []
        map_cache(kept.kv, lambda t: (t.dim() == 0 and counters.append(t.numel() * t.element_size())) or t)
        held = kept.nbytes - sum(counters)
        assert held == tokens * S.kv_bytes_per_token_of(config, 4) + S.state_bytes_of(config, 4)
        size = size_from_config(config)
        assert held == tokens * kv_bytes_per_token(size, "fp32") + state_bytes(size, "fp32")
        assert (state_bytes(size, "fp32") > 0) == (arch in HYBRID)


@pytest.mark.parametrize("arch", HYBRID)
def test_a_qwen3_5_prefix_on_disk_is_read_back_by_the_next_engine_with_its_recurrent_state(folders, tmp_path: Path,
                                                                                          monkeypatch, arch) -> None:
    def ask(engine: LocalEngine) -> tuple[str, int]:
        res = engine.generate([user(_video(seed=4, key="on-disk"), "What moves?")], GREEDY(12))
        return res.text, res.metrics.reused_prefix_tokens

    first = _engine(folders[arch], tmp_path)
    first.prefixes.disk.min_bytes = 0  # tiny prefixes; real ones are written from 64 MiB
    text, reused = ask(first)
    first.close()
    (path,) = (tmp_path / "prefixes").glob("*.kv")
    again = _engine(folders[arch], tmp_path)
    calls: list[int] = []
    real = again._runner._prefill_prefix
    monkeypatch.setattr(again._runner, "_prefill_prefix", lambda *a, **k: calls.append(1) or real(*a, **k))
    try:
        text2, reused2 = ask(again)
        assert (text2, calls, again.prefixes.disk_hits) == (text, [], 1) and reused == 0 and reused2 > 0
        (kept,) = [k.prefix for k in again.prefixes._items.values()]
        kinds = [type(layer).__name__ for layer in kept.kv.layers]
        assert kinds == ["LinearAttentionLayer", "LinearAttentionLayer", "DynamicLayer", "LinearAttentionLayer"]
        assert path.stat().st_size > kept.nbytes  # the states are in the file (plus the header)
    finally:
        again.close()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_stored_visual_features_answer_like_the_frames_without_the_vision_tower(engines, folders, tmp_path: Path,
                                                                                arch: str) -> None:
    question = "What happens in this video?"
    want = engines[arch][0].generate([user(_video(seed=5), question)], GREEDY(12)).text
    store = ResultCache(tmp_path / "store")
    first = _engine(folders[arch], tmp_path / "a", store)
    second = _engine(folders[arch], tmp_path / "b", store, prefill_chunk_tokens=16)  # the LM prefilled in stretches
    try:
        a = first.generate([user(_video(seed=5, key="vid"), question)], GREEDY(12))

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("the vision tower ran")

        second.model.model.visual.forward = refuse
        b = second.generate([user(_video(seed=5, key="vid"), question)], GREEDY(12))
        assert (a.metrics.visual_features, b.metrics.visual_features) == ("encoded", "stored")
        assert a.text == b.text == want
    finally:
        first.close()
        second.close()


# -- the planner: every known size, and the loaded model's own numbers ------------------------------------------
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_planner_reads_each_loaded_architecture_exactly(engines, arch: str) -> None:
    model = engines[arch][0].model
    size = size_from_config(model.config)
    assert size is not None and planner_size(size) == size
    params = sum(p.numel() for p in model.parameters())
    assert weights_bytes(size, "fp32") == 4 * params
    vision = sum(p.numel() for p in model.model.visual.parameters())
    assert S.count_params(model.config).vision == vision


@pytest.mark.parametrize("key", list(S.SHAPES))
def test_known_shapes_count_the_parameters_transformers_builds(key: str) -> None:
    config = S.build_config(key)
    with torch.device("meta"):
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_config(config)
    count = S.count_params(config)
    assert count.total == sum(p.numel() for p in model.parameters())
    assert count.vision == sum(p.numel() for p in model.model.visual.parameters())
    assert model.config.model_type == S.SHAPES[key].model_type


def test_known_shapes_give_the_figures_users_plan_with() -> None:
    gib, mib = 1024**3, 1024**2
    # KV per token: Qwen3.5 keeps it in 8 of 32 layers (4 KV heads of 256), plus 49.5 MiB of fixed state
    assert kv_bytes_per_token("4b", "bf16") == 144 * 1024  # Qwen3-VL-4B, as before
    assert kv_bytes_per_token("qwen3.5-4b", "bf16") == kv_bytes_per_token("qwen3.5-9b", "bf16") == 32 * 1024
    assert state_bytes("qwen3.5-4b", "bf16") == state_bytes("qwen3.5-9b", "bf16") == int(49.5 * mib)
    assert state_bytes("qwen3-vl-8b", "bf16") == 0
    # a mixture of experts: all experts resident, about a tenth of them read per token
    assert 61e9 < weights_bytes("qwen3-vl-30b-a3b", "bf16") < 63e9
    assert 5.5e9 < decode_bytes_per_token("qwen3-vl-30b-a3b", "bf16") < 6.5e9
    assert 69e9 < weights_bytes("qwen3.5-35b-a3b", "bf16") < 71e9
    assert decode_bytes_per_token("qwen3.5-35b-a3b", "bf16") < 6.5e9
    assert decode_bytes_per_token("4b", "bf16") == int(S.shape_entry("qwen3-vl-4b")["active"] * 2)  # 4.02 B
    # names as users write them: Thinking and FP8 checkpoints have their model's shape
    assert [planner_size(n) for n in ("Qwen/Qwen3.5-9B", "Qwen/Qwen3-VL-8B-Thinking", "Qwen3-VL-4B-Instruct-FP8",
                                      "qwen3-vl-30b-a3b", "4b", "Qwen/Qwen2.5-VL-7B")] == [
        "qwen3.5-9b", "qwen3-vl-8b", "qwen3-vl-4b", "qwen3-vl-30b-a3b", "4b", None]
    # a 10-minute 720p video at the default plan: its KV on the Qwen3.5-9B is under a quarter of the Qwen3-VL-8B's
    info = VideoInfo(path="x.mp4", size_bytes=1, container="mp4", codec="h264", duration=600.0, fps=30.0,
                     frame_count=18000, frame_count_exact=True, width=1280, height=720, coded_width=1280,
                     coded_height=720, rotation=0, pix_fmt="yuv420p", variable_frame_rate=False, keyframe_interval=2.0,
                     keyframe_count=300, has_audio=False, audio_codec=None)
    vl = plan_budget(info, SamplingPlan(), "8b", "bf16", gpu_memory_bytes=141 * gib)
    q35 = plan_budget(info, SamplingPlan(), "qwen3.5-9b", "bf16", gpu_memory_bytes=141 * gib)
    assert vl.prompt_tokens == q35.prompt_tokens and vl.visual_tokens == 46080
    assert q35.kv_cache_bytes == (q35.prompt_tokens + 512) * 32 * 1024 + int(49.5 * mib)
    assert vl.kv_cache_bytes == (vl.prompt_tokens + 512) * 144 * 1024
    assert q35.vision_feature_bytes == vl.vision_feature_bytes // 4  # no DeepStack levels in Qwen3.5


def test_a_thinking_models_answer_is_what_follows_its_reasoning(engines) -> None:
    from core.vlm.arch import think_end_id
    from core.vlm.types import split_reasoning

    tok = engines["qwen3_vl"][0].processor.tokenizer
    assert think_end_id(tok) is None  # an Instruct tokenizer: answers are whole
    tok = type(tok).from_pretrained(tok.name_or_path)  # a copy: the shared engine's tokenizer stays as it is
    tok.add_tokens(["<think>", "</think>"])  # a Thinking checkpoint's tokenizer has both
    end = think_end_id(tok)
    ids = tok("<think>\nThe door opens at 3:15, so</think>\n\nAt 3:40 the door closes.", add_special_tokens=False)[
        "input_ids"]
    decode = lambda x: tok.decode(x, skip_special_tokens=True)  # noqa: E731
    assert split_reasoning(ids, end, decode) == ("At 3:40 the door closes.", "The door opens at 3:15, so")
    plain = tok("At 3:40 the door closes.", add_special_tokens=False)["input_ids"]
    assert split_reasoning(plain, end, decode) == ("At 3:40 the door closes.", "")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_the_vision_towers_frame_groups_run_in_one_call_with_the_same_features(engines, arch: str,
                                                                              monkeypatch) -> None:
    from core.vlm import features as F

    engine = engines[arch][0]
    attn = [m for m in engine.model.model.visual.modules() if hasattr(m, "_vlscope_original_forward")]
    assert len(attn) == 2  # both blocks of the tiny tower have the one-call path
    pixels, meta = F.video_pixels(engine.processor, _video(seed=6))
    ours = F.encode(engine.model, pixels, meta)
    for m in attn:
        monkeypatch.setattr(m, "forward", m._vlscope_original_forward)
    theirs = F.encode(engine.model, pixels, meta)
    assert torch.allclose(ours.pooler, theirs.pooler, atol=1e-5, rtol=1e-5)
    assert len(ours.deepstack) == len(theirs.deepstack) == (1 if arch.startswith("qwen3_vl") else 0)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-5) for a, b in zip(ours.deepstack, theirs.deepstack))
