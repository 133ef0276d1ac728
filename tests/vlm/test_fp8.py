"""The offline block-FP8 fallback (core/vlm/fp8.py): its math, its registration in transformers, a tiny FP8 model."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from core.vlm import fp8

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
_DEEPGEMM_ENV = "TRANSFORMERS_DISABLE_DEEPGEMM_LINEAR"


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_fp8(n: int, k: int, block: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random FP8 weight (n, k) and positive float32 scales (ceil(n/bn), ceil(k/bk))."""
    g = _gen(seed)
    w = (torch.randn(n, k, generator=g) * 100).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    s = torch.rand(math.ceil(n / block[0]), math.ceil(k / block[1]), generator=g) * 0.02 + 1e-3
    return w, s


def _expanded_scales(s: torch.Tensor, n: int, k: int, block: tuple[int, int]) -> torch.Tensor:
    return s.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[:n, :k]


def _reference(x, w, s, block, bias=None) -> torch.Tensor:
    """float64 x @ (W_fp8 * expanded scales)^T (+ bias)."""
    n, k = w.shape
    wd = w.double() * _expanded_scales(s.double(), n, k, block)
    y = x.double() @ wd.T
    return y if bias is None else y + bias.double()


def _quantize_blocks(w: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The standard recipe for any shape: per block, scale = amax / 448, weight / scale rounded to FP8."""
    n, k = w.shape
    bn, bk = block
    pn, pk = math.ceil(n / bn) * bn, math.ceil(k / bk) * bk
    padded = torch.zeros(pn, pk, dtype=torch.float32)
    padded[:n, :k] = w.float()
    blocks = padded.reshape(pn // bn, bn, pk // bk, bk)
    amax = blocks.abs().amax(dim=(1, 3))
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8).reshape(pn, pk)[:n, :k]
    return q.contiguous(), scale.float()


def _rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    y, ref = y.detach().double(), ref.detach().double()
    return float((y - ref).norm() / ref.norm())


@pytest.fixture()
def clean_fp8_state():
    """No FP8 kernel registered during the test; transformers' globals and the env restored afterwards."""
    from transformers.integrations import finegrained_fp8 as tf_fp8
    from transformers.integrations import hub_kernels

    missing = object()
    saved_bundle = tf_fp8._FINEGRAINED_FP8
    saved_module = hub_kernels._KERNEL_MODULE_MAPPING.get(fp8.KERNEL_NAME, missing)
    saved_env = os.environ.get(_DEEPGEMM_ENV)
    tf_fp8._FINEGRAINED_FP8 = None
    hub_kernels._KERNEL_MODULE_MAPPING.pop(fp8.KERNEL_NAME, None)
    try:
        yield tf_fp8, hub_kernels
    finally:
        tf_fp8._FINEGRAINED_FP8 = saved_bundle
        if saved_module is missing:
            hub_kernels._KERNEL_MODULE_MAPPING.pop(fp8.KERNEL_NAME, None)
        else:
            hub_kernels._KERNEL_MODULE_MAPPING[fp8.KERNEL_NAME] = saved_module
        if saved_env is None:
            os.environ.pop(_DEEPGEMM_ENV, None)
        else:
            os.environ[_DEEPGEMM_ENV] = saved_env


# --------------------------------------------------------------------------------------------------
# the math
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,k", [(256, 384), (200, 300), (64, 48)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_block_linear_matches_float64_reference(n: int, k: int, dtype: torch.dtype, with_bias: bool) -> None:
    block = (128, 128)
    w, s = _random_fp8(n, k, block, seed=n + k)
    x = torch.randn(2, 5, k, generator=_gen(1)).to(dtype)
    bias = torch.randn(n, generator=_gen(2)).to(dtype) if with_bias else None
    ref = _reference(x, w, s, block, bias)

    y = fp8.block_fp8_linear(x, w, s, block, bias)
    assert y.shape == (2, 5, n) and y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1.5e-2
    assert _rel_err(y, ref) < tol

    # the hub kernel's entry point: output dtype given by the caller, bias added by the caller
    y2 = fp8.matmul_2d(x, w, s, list(block), dtype)
    if bias is not None:
        y2.add_(bias)
    assert y2.dtype == dtype and _rel_err(y2, ref) < tol


def test_per_tensor_scale_and_output_dtype() -> None:
    w, _ = _random_fp8(96, 80, (128, 128), seed=3)
    s = torch.tensor(0.0123)
    x = torch.randn(7, 80, generator=_gen(4))
    y = fp8.matmul_2d(x, w, s, None, torch.bfloat16)
    ref = x.double() @ (w.double() * 0.0123).T
    assert y.dtype == torch.bfloat16 and _rel_err(y, ref) < 1.5e-2


def test_chunked_dequantisation_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    block = (128, 128)
    w, s = _random_fp8(600, 300, block, seed=5)
    x = torch.randn(3, 300, generator=_gen(6))
    bias = torch.randn(600, generator=_gen(7))
    whole = fp8.block_fp8_linear(x, w, s, block, bias)
    monkeypatch.setattr(fp8, "_CHUNK_ELEMENTS", 130 * 300)  # forces chunks of 128 rows (5 chunks, last partial)
    chunked = fp8.block_fp8_linear(x, w, s, block, bias)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-5)


def test_dequantisation_matches_transformers_quantiser_round_trip() -> None:
    """Quantise with transformers' own Fp8Quantize, dequantise with both sides: same weights, close to the original."""
    from transformers import FineGrainedFP8Config
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize, Fp8Quantize

    quantizer = SimpleNamespace(quantization_config=FineGrainedFP8Config())
    original = (torch.randn(256, 384, generator=_gen(8)) * 0.05).to(torch.bfloat16)
    out = Fp8Quantize(quantizer)._quantize_one("layer.weight", original)
    q, s = out["layer.weight"], out["layer.weight_scale_inv"]
    assert q.dtype == FP8 and s.shape == (2, 3)

    ours = fp8.dequantize_block_fp8(q, s, (128, 128), torch.bfloat16)
    theirs = Fp8Dequantize(quantizer)._dequantize_one(q, s, output_dtype=torch.bfloat16)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)

    x = torch.randn(4, 384, generator=_gen(9)).to(torch.bfloat16)
    ref = x.double() @ original.double().T
    assert _rel_err(fp8.matmul_2d(x, q, s, [128, 128], torch.bfloat16), ref) < 0.03


def test_standard_recipe_with_partial_blocks_is_close_to_the_original_weight() -> None:
    original = torch.randn(200, 300, generator=_gen(10)).to(torch.bfloat16)
    q, s = _quantize_blocks(original, (128, 128))
    assert s.shape == (2, 3)
    x = torch.randn(6, 300, generator=_gen(11)).to(torch.bfloat16)
    y = fp8.matmul_2d(x, q, s, [128, 128], torch.bfloat16)
    assert _rel_err(y, x.double() @ original.double().T) < 0.03


def test_batched_and_grouped_entry_points() -> None:
    block = (32, 32)
    experts = [_random_fp8(48, 40, block, seed=20 + e) for e in range(3)]
    w = torch.stack([e[0] for e in experts])
    s = torch.stack([e[1] for e in experts])
    x = torch.randn(7, 40, generator=_gen(12)).to(torch.bfloat16)

    ids = torch.tensor([2, 0, 0, 1, 2, 3, 2])  # 3 == num_experts: an expert-parallel sentinel
    y = fp8.matmul_batched(x, w, s, block_size=list(block), expert_ids=ids)
    for row, e in enumerate(ids.tolist()):
        if e < 3:
            assert _rel_err(y[row], _reference(x[row], w[e], s[e], block)) < 1.5e-2
        else:
            assert torch.all(y[row] == 0)

    # grouped: rows sorted by expert, offsets = inclusive cumsum; rows past offsets[-1] are sentinels
    tokens = torch.tensor([2, 0, 3])
    offsets = torch.cumsum(tokens, 0, dtype=torch.int32)
    y = fp8.matmul_grouped(x, w, s, offsets=offsets, tokens_per_expert=tokens.float(), block_size=list(block))
    owner = [0, 0, 2, 2, 2]
    for row, e in enumerate(owner):
        assert _rel_err(y[row], _reference(x[row], w[e], s[e], block)) < 1.5e-2
    assert torch.all(y[5:] == 0)


def test_fp4_weights_are_refused() -> None:
    with pytest.raises(NotImplementedError, match="FP4"):
        fp8.matmul_2d(torch.randn(2, 8), torch.zeros(4, 4, dtype=torch.int8), torch.ones(1, 1), [128, 128])


# --------------------------------------------------------------------------------------------------
# registration in transformers
# --------------------------------------------------------------------------------------------------


def _fp8_linear(n: int, k: int, bias: bool, seed: int):
    from transformers.integrations.finegrained_fp8 import FP8Linear

    layer = FP8Linear(in_features=k, out_features=n, block_size=(128, 128), has_bias=bias)
    w, s = _random_fp8(n, k, (128, 128), seed)
    with torch.no_grad():
        layer.weight.data = w
        layer.weight_scale_inv.data = s
        if bias:
            layer.bias.data = torch.randn(n, generator=_gen(seed + 1))
    return layer, w, s


def test_install_registers_the_fallback_and_fp8linear_runs(clean_fp8_state) -> None:
    from transformers.utils.import_utils import is_kernels_available

    tf_fp8, hub_kernels = clean_fp8_state
    if is_kernels_available():
        pytest.skip("`kernels` is installed here: this test is about the machine without it")
    layer, w, s = _fp8_linear(200, 300, bias=True, seed=30)
    x = torch.randn(3, 4, 300, generator=_gen(31)).to(torch.bfloat16)

    with pytest.raises(ImportError, match="finegrained-fp8"), torch.no_grad():
        layer(x)  # the problem this module solves

    message = fp8.install_offline_fp8_kernel()
    assert message.startswith(fp8.FALLBACK_REGISTERED) and "kernels" in message
    assert "\n" not in message
    assert fp8.install_offline_fp8_kernel() == fp8.FALLBACK_ALREADY_REGISTERED  # idempotent

    kernel = tf_fp8.load_finegrained_fp8_kernel()
    assert kernel.matmul is fp8.matmul_2d
    assert kernel.batched_matmul is fp8.matmul_batched
    assert kernel.grouped_matmul is fp8.matmul_grouped
    assert hub_kernels.lazy_load_kernel(fp8.KERNEL_NAME) is fp8  # the mapping holds a ModuleType

    with torch.no_grad():
        y = layer(x)
    assert y.shape == (3, 4, 200) and y.dtype == torch.bfloat16
    assert _rel_err(y, _reference(x, w, s, (128, 128), layer.bias)) < 1.5e-2

    layer32, w32, s32 = _fp8_linear(128, 256, bias=False, seed=32)
    x32 = torch.randn(5, 256, generator=_gen(33))
    with torch.no_grad():
        assert _rel_err(layer32(x32), _reference(x32, w32, s32, (128, 128))) < 1e-5


def test_fp8_experts_dispatches_agree(clean_fp8_state) -> None:
    """transformers' FP8Experts: eager (matmul_2d), batched_mm and grouped_mm forwards give the same result."""
    from transformers.integrations.finegrained_fp8 import (
        FP8Experts,
        fp8_batched_mm_experts_forward,
        fp8_grouped_mm_experts_forward,
    )

    fp8.install_offline_fp8_kernel(force=True)
    config = SimpleNamespace(hidden_size=64, num_experts=4, moe_intermediate_size=48, hidden_act="silu")
    experts = FP8Experts(config, block_size=(32, 32))
    experts._is_expert_parallel = False
    g = _gen(40)
    with torch.no_grad():
        for name in ("gate_up_proj", "down_proj"):
            weight = getattr(experts, name)
            weight.data = (torch.randn(weight.shape, generator=g) * 50).to(FP8)
            scale = getattr(experts, f"{name}_scale_inv")
            scale.data = torch.rand(scale.shape, generator=g) * 0.02 + 1e-3
    hidden = torch.randn(9, 64, generator=g).to(torch.bfloat16)
    top_k_index = torch.randint(0, 4, (9, 2), generator=g)
    top_k_weights = torch.softmax(torch.randn(9, 2, generator=g), -1).to(torch.bfloat16)
    with torch.no_grad():
        eager = experts(hidden, top_k_index, top_k_weights)
        batched = fp8_batched_mm_experts_forward(experts, hidden, top_k_index, top_k_weights)
        grouped = fp8_grouped_mm_experts_forward(experts, hidden, top_k_index, top_k_weights)
    assert eager.abs().max() > 0
    assert _rel_err(batched, eager) < 2e-2
    assert _rel_err(grouped, eager) < 2e-2


def test_hub_kernel_left_alone_when_usable(clean_fp8_state, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers.utils.import_utils as import_utils

    tf_fp8, hub_kernels = clean_fp8_state
    monkeypatch.setattr(import_utils, "is_kernels_available", lambda *a, **k: True)
    monkeypatch.setattr(hub_kernels, "_kernels_enabled", True)  # set False at import when `kernels` is absent
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    # online: transformers would fetch it on first use; nothing is probed, nothing registered
    monkeypatch.setattr(fp8, "_hub_offline", lambda: False)
    assert fp8.install_offline_fp8_kernel().startswith(fp8.HUB_KERNEL_AVAILABLE)
    assert tf_fp8._FINEGRAINED_FP8 is None

    # offline, and the local cache has no build: the fallback is registered, DeepGEMM linear turned off
    monkeypatch.setattr(fp8, "_hub_offline", lambda: True)

    def no_cached_kernel():
        raise ImportError("Failed to load the finegrained-fp8 kernel")

    monkeypatch.setattr(tf_fp8, "_load_finegrained_fp8_kernel", no_cached_kernel)
    os.environ.pop(_DEEPGEMM_ENV, None)
    message = fp8.install_offline_fp8_kernel()
    assert message.startswith(fp8.FALLBACK_REGISTERED) and "offline" in message
    assert os.environ.get(_DEEPGEMM_ENV) == "1"
    assert fp8._is_ours(tf_fp8._FINEGRAINED_FP8)


def test_install_reports_a_reason_without_the_integration(clean_fp8_state, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import transformers.integrations

    tf_fp8, _ = clean_fp8_state
    monkeypatch.delattr(transformers.integrations, "finegrained_fp8", raising=False)
    monkeypatch.setitem(sys.modules, "transformers.integrations.finegrained_fp8", None)
    message = fp8.install_offline_fp8_kernel()
    assert message.startswith("nothing done") and "\n" not in message
    assert tf_fp8._FINEGRAINED_FP8 is None


# --------------------------------------------------------------------------------------------------
# a tiny FP8 Qwen3-VL
# --------------------------------------------------------------------------------------------------

_BLOCK = [32, 32]  # the tiny model's layers are 32..128 wide: 128x128 blocks would give one block each
_QUANTISED = re.compile(r"model\.language_model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight")


def _write_fp8_checkpoint(src: Path, dst: Path) -> Path:
    """A pre-quantised checkpoint laid out like the official "-FP8" ones: weight + weight_scale_inv."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    state = load_file(src / "model.safetensors")
    out = {}
    for key, value in state.items():
        if _QUANTISED.fullmatch(key):
            out[key], out[key.removesuffix("weight") + "weight_scale_inv"] = _quantize_blocks(value, tuple(_BLOCK))
        else:
            out[key] = value
    save_file(out, dst / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((dst / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "fp8",
        "activation_scheme": "dynamic",
        "weight_block_size": _BLOCK,
        "modules_to_not_convert": ["model.visual", "lm_head"],
    }
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


def test_quantising_on_the_fly_on_cpu(tiny_model_dir: Path, tmp_path: Path, clean_fp8_state) -> None:
    """The brief's path: quantise the bf16 model at load, save, reload, generate."""
    from transformers import AutoModelForImageTextToText, FineGrainedFP8Config

    fp8.install_offline_fp8_kernel()
    config = FineGrainedFP8Config(weight_block_size=_BLOCK, modules_to_not_convert=["model.visual", "lm_head"])
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            tiny_model_dir, quantization_config=config, device_map="cpu"
        )
    except RuntimeError as exc:  # transformers: "No GPU or XPU found. A GPU or XPU is needed for FP8 quantization."
        pytest.skip(str(exc))
    model.save_pretrained(tmp_path / "fp8")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "fp8", device_map="cpu")
    ids = torch.tensor([[1, 5, 7, 9, 11, 40]])
    assert reloaded.generate(ids, max_new_tokens=3, do_sample=False).shape == (1, 9)


def test_tiny_fp8_checkpoint_loads_and_generates(
    tiny_model_dir: Path, tmp_path: Path, clean_fp8_state, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForImageTextToText
    from transformers.integrations.finegrained_fp8 import FP8Linear
    from transformers.quantizers.quantizer_finegrained_fp8 import FineGrainedFP8HfQuantizer

    folder = _write_fp8_checkpoint(tiny_model_dir, tmp_path / "fp8")
    ids = torch.tensor([[1, 5, 7, 9, 11, 40, 41, 42, 100, 200]])
    load = dict(dtype=torch.bfloat16, device_map="cpu")
    with torch.no_grad():
        # without a GPU transformers dequantises a pre-quantised checkpoint to bf16 at load
        dequantised = AutoModelForImageTextToText.from_pretrained(folder, **load).eval()
        assert not any(isinstance(m, FP8Linear) for m in dequantised.modules())
        reference = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, **load).eval()

        # keep the FP8 layers, as on the GPU machine: skip only the "needs a GPU" environment check
        monkeypatch.setattr(FineGrainedFP8HfQuantizer, "validate_environment", lambda self, *a, **k: None)
        assert fp8.install_offline_fp8_kernel().startswith(fp8.FALLBACK_REGISTERED)
        model = AutoModelForImageTextToText.from_pretrained(folder, **load).eval()
        layers = [m for m in model.modules() if isinstance(m, FP8Linear)]
        assert len(layers) == 14 and all(m.weight.dtype == FP8 for m in layers)
        assert not any(isinstance(m, FP8Linear) for m in model.model.visual.modules())

        logits = model(input_ids=ids).logits.float()
        # same dequantised weights as transformers' own dequantize-at-load: same logits
        torch.testing.assert_close(logits, dequantised(input_ids=ids).logits.float(), rtol=1e-3, atol=1e-2)
        ref = reference(input_ids=ids).logits.float()
        assert torch.nn.functional.cosine_similarity(logits.flatten(), ref.flatten(), 0) > 0.98

        new = model.generate(ids, max_new_tokens=5, do_sample=False)
        assert new.shape == (1, 15)
        assert torch.equal(new, dequantised.generate(ids, max_new_tokens=5, do_sample=False))
        assert new[0, 10] == reference.generate(ids, max_new_tokens=1, do_sample=False)[0, 10]

        # save and reload keeps the FP8 layout and the result
        model.save_pretrained(tmp_path / "resaved")
        reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "resaved", **load).eval()
        assert sum(isinstance(m, FP8Linear) for m in reloaded.modules()) == 14
        torch.testing.assert_close(reloaded(input_ids=ids).logits.float(), logits, rtol=0, atol=0)


def test_the_engine_loads_an_fp8_checkpoint_offline_and_says_which_kernel_runs(
    tiny_model_dir: Path, tmp_path: Path, clean_fp8_state, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The users' path: LocalEngine with VLSCOPE_OFFLINE registers the fallback and the Home page's line says so."""
    from transformers.integrations.finegrained_fp8 import FP8Linear
    from transformers.quantizers.quantizer_finegrained_fp8 import FineGrainedFP8HfQuantizer

    from core.settings import Settings
    from core.vlm import GenerationParams, user
    from core.vlm.local import LocalEngine

    folder = _write_fp8_checkpoint(tiny_model_dir, tmp_path / "fp8")
    monkeypatch.setattr(FineGrainedFP8HfQuantizer, "validate_environment", lambda self, *a, **k: None)  # as on a GPU
    engine = LocalEngine(Settings(model=str(folder), offline=True, dtype="bf16", cache_dir=tmp_path / "cache"))
    engine.load()
    try:
        assert sum(isinstance(m, FP8Linear) for m in engine.model.modules()) == 14
        assert engine.info().quantization.startswith("fp8 (checkpoint; " + fp8.FALLBACK_REGISTERED)
        result = engine.generate([user("Tell me about the door.")], GenerationParams.greedy_defaults(6))
        assert result.completion_tokens >= 1 and result.finish_reason in ("length", "stop")
    finally:
        engine.close()
