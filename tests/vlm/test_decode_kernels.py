"""The lean decode step's Triton kernels (core/vlm/decode_kernels.py), run on the CPU by Triton's interpreter.

Triton reads TRITON_INTERPRET when it is imported, so the kernel tests run in a child pytest started with it
set (`test_kernels_under_the_triton_interpreter`); in the parent run they are skipped with that reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from core.settings import load_settings  # noqa: E402
from core.vlm import decode_kernels as da  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(INTERPRETED, reason="this is the child run")
def test_kernels_under_the_triton_interpreter() -> None:
    # the interpreter runs on the CPU: hide any GPU so the child's tensors stay there (the GPU has its own tests)
    env = dict(os.environ, TRITON_INTERPRET="1", VLSCOPE_DECODE_KERNELS="triton", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "interpreted",
         str(Path(__file__).relative_to(ROOT)), "tests/vlm/test_lean_step.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "16 passed" in run.stdout and "skipped" not in run.stdout  # 13 kernel checks + 3 lean-step checks


@pytest.fixture()
def interpreted():
    if not INTERPRETED:
        pytest.skip("runs in the child pytest with TRITON_INTERPRET=1 (test_kernels_under_the_triton_interpreter)")


def _reference(q, keys, values, bias, kv_heads, scale):
    scores = q @ keys.transpose(1, 2) * scale + bias.repeat_interleave(kv_heads, 0)[:, None, :]
    return torch.softmax(scores, -1) @ values


@pytest.mark.interpreted
@pytest.mark.parametrize(
    "batch,kv_heads,group,dim,length,pos",
    [(1, 2, 2, 16, 512, 300), (1, 8, 4, 128, 2304, 2200), (1, 2, 4, 32, 9472, 9000), (3, 2, 2, 16, 256, 100)],
    ids=["short cache", "4B head layout", "long cache, 256-position chunks", "three rows with left padding"],
)
def test_equals_softmax_attention(interpreted, batch, kv_heads, group, dim, length, pos) -> None:
    g = torch.Generator().manual_seed(length)
    heads = batch * kv_heads
    q = torch.randn(heads, group, dim, generator=g)
    keys = torch.randn(heads, length, dim, generator=g)
    values = torch.randn(heads, length, dim, generator=g)
    bias = torch.zeros(batch, length)
    bias[:, pos + 1:] = float("-inf")
    if batch > 1:
        bias[1, :7] = float("-inf")  # row 1 is left-padded by 7 positions
        bias[2, :60] = float("-inf")
    out = da.decode_attention(q, keys, values, bias, torch.tensor([pos]), dim ** -0.5)
    torch.testing.assert_close(out, _reference(q, keys, values, bias, kv_heads, dim ** -0.5), rtol=1e-5, atol=1e-5)


@pytest.mark.interpreted
def test_positions_after_the_current_one_are_never_read(interpreted) -> None:
    """Garbage (NaN) in the unused tail of a static cache does not reach the result: those chunks are skipped."""
    q = torch.randn(2, 2, 16)
    keys, values = torch.randn(2, 1024, 16), torch.randn(2, 1024, 16)
    keys[:, 301:], values[:, 301:] = float("nan"), float("nan")
    bias = torch.zeros(1, 1024)
    bias[:, 301:] = float("-inf")
    out = da.decode_attention(q, keys, values, bias, torch.tensor([300]), 0.25)
    expected = _reference(q, keys[:, :301], values[:, :301], bias[:, :301], 2, 0.25)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_where_the_kernel_is_used(monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("VLSCOPE_DECODE_KERNELS", raising=False)
    assert da.unavailable_reason(torch.device("cpu"), torch.bfloat16) == "not a CUDA device"
    assert "float32" in da.unavailable_reason(torch.device("cuda"), torch.float32)
    assert da.unavailable_reason(torch.device("cuda"), torch.bfloat16) is None
    monkeypatch.setenv("VLSCOPE_DECODE_KERNELS", "torch")  # the setting `decode_kernels`, passed down by the engine
    mode = load_settings().decode_kernels
    assert da.unavailable_reason(torch.device("cuda"), torch.bfloat16, mode) == "VLSCOPE_DECODE_KERNELS=torch"
    with pytest.raises(ValueError, match="power-of-two head_dim"):
        da.decode_attention(torch.zeros(1, 2, 24), torch.zeros(1, 64, 24), torch.zeros(1, 64, 24), torch.zeros(1, 64),
                            torch.tensor([3]), 1.0)


def _prepare_reference_norm(x, weight, eps):
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRMSNorm

    m = Qwen3VLTextRMSNorm(x.shape[-1], eps=eps).to(x.dtype)
    m.weight.data = weight.clone()
    return m(x)


def _prepare_reference(qkv, q_norm, k_norm, cos, sin, q_heads, eps):
    """transformers' own code: Qwen3-VL's RMSNorm modules and apply_rotary_pos_emb, in the input's dtype."""
    from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb

    batch, _, heads, dim = qkv.shape
    kv_heads = (heads - q_heads) // 2
    q = _prepare_reference_norm(qkv[:, :, :q_heads], q_norm, eps).transpose(1, 2)  # (B, heads, 1, D)
    k = _prepare_reference_norm(qkv[:, :, q_heads:q_heads + kv_heads], k_norm, eps).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return q, k, qkv[:, :, q_heads + kv_heads:].transpose(1, 2)


@pytest.mark.interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("batch,q_heads,kv_heads,dim", [(1, 4, 2, 16), (3, 8, 2, 32)], ids=["one row", "three rows"])
def test_prepare_attention_equals_transformers_norm_and_rotary(interpreted, dtype, batch, q_heads, kv_heads, dim) -> None:
    g = torch.Generator().manual_seed(dim + batch)
    length, pos, eps = 24, 9, 1e-6
    qkv = (torch.randn(batch, 1, q_heads + 2 * kv_heads, dim, generator=g) * 3).to(dtype)
    q_norm, k_norm = (torch.rand(dim, generator=g) + 0.5).to(dtype), (torch.rand(dim, generator=g) + 0.5).to(dtype)
    angles = torch.rand(batch, 1, dim // 2, generator=g) * 40
    cos, sin = torch.cat([angles.cos()] * 2, -1).to(dtype), torch.cat([angles.sin()] * 2, -1).to(dtype)
    keys = torch.randn(batch, kv_heads, length, dim, generator=g).to(dtype)
    values = torch.randn(batch, kv_heads, length, dim, generator=g).to(dtype)
    keys_before, values_before = keys.clone(), values.clone()

    q = da.prepare_attention(qkv, q_norm, k_norm, cos, sin, torch.tensor([pos]), keys, values, q_heads, eps)

    ref_q, ref_k, ref_v = _prepare_reference(qkv, q_norm, k_norm, cos, sin, q_heads, eps)
    # float16: the same roundings as transformers' eager code, so the same numbers
    tol = dict(rtol=0, atol=0) if dtype == torch.float16 else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(q.view(batch, q_heads, dim), ref_q[:, :, 0], **tol)
    torch.testing.assert_close(keys[:, :, pos], ref_k[:, :, 0], **tol)
    assert torch.equal(values[:, :, pos], ref_v[:, :, 0])
    others = [i for i in range(length) if i != pos]  # nothing else in the cache is touched
    assert torch.equal(keys[:, :, others], keys_before[:, :, others])
    assert torch.equal(values[:, :, others], values_before[:, :, others])


@pytest.mark.interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_silu_mul_equals_the_gated_activation(interpreted, dtype) -> None:
    width = da.SILU_BLOCK + 300  # a partial last block
    gate_up = (torch.randn(3, 1, 2 * width, generator=torch.Generator().manual_seed(1)) * 4).to(dtype)
    gate, up = gate_up.chunk(2, dim=-1)
    expected = torch.nn.functional.silu(gate) * up
    got = da.silu_mul(gate_up)
    assert got.shape == (3, 1, width) and got.dtype == dtype
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 if dtype == torch.float32 else 4e-3)


@pytest.mark.interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rms_norm_equals_the_models_norm(interpreted, dtype) -> None:
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRMSNorm

    g = torch.Generator().manual_seed(2)
    x = (torch.randn(3, 1, 2560, generator=g) * 5).to(dtype)  # the 4B hidden size: a masked 4096-wide block
    norm = Qwen3VLTextRMSNorm(2560, eps=1e-6).to(dtype)
    norm.weight.data = (torch.rand(2560, generator=g) + 0.5).to(dtype)
    got = da.rms_norm(x, norm.weight, 1e-6)
    torch.testing.assert_close(got, norm(x), **(dict(rtol=0, atol=0) if dtype == torch.float16 else {}))


def test_prepare_attention_refuses_a_layout_it_cannot_write() -> None:
    qkv = torch.zeros(1, 1, 8, 16)
    keys = torch.zeros(1, 2, 32, 16)
    with pytest.raises(ValueError, match=r"4 \+ 2 x 2 heads"):
        da.prepare_attention(torch.zeros(1, 2, 8, 16), torch.ones(16), torch.ones(16), torch.ones(1, 1, 16),
                             torch.zeros(1, 1, 16), torch.tensor([0]), keys, keys.clone(), 4, 1e-6)
    with pytest.raises(ValueError, match="laid out"):
        da.prepare_attention(qkv, torch.ones(16), torch.ones(16), torch.ones(1, 1, 16), torch.zeros(1, 1, 16),
                             torch.tensor([0]), keys.transpose(2, 3), keys.clone(), 4, 1e-6)


def _no_less_accurate(got, eager, exact, what: str) -> None:
    """Within one bf16 step of transformers' eager bf16 result, and no further from the float32 result than it."""
    torch.testing.assert_close(got, eager, rtol=1e-2, atol=1e-2)
    err_got = (got.float() - exact).abs().mean().item()
    err_eager = (eager.float() - exact).abs().mean().item()
    assert err_got <= 1.05 * err_eager + 1e-7, f"{what}: error {err_got:.3g} against eager bf16's {err_eager:.3g}"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_the_kernels_compiled_for_cuda_in_bf16(monkeypatch) -> None:
    """The kernels compiled for a real GPU, in bf16, with the 4B model's layout, against transformers' eager code
    in bf16 and in float32 (same inputs). On the GPU the products between roundings may stay in float32, so the
    results can differ from eager bf16 by one step in the last bit; they must be no less accurate."""
    monkeypatch.delenv("VLSCOPE_DECODE_KERNELS", raising=False)
    assert da.unavailable_reason(torch.device("cuda"), torch.bfloat16) is None
    g = torch.Generator().manual_seed(0)
    batch, q_heads, kv_heads, dim, length, pos = 2, 32, 8, 128, 5000, 4321
    dt, dev = torch.bfloat16, "cuda"
    qkv = (torch.randn(batch, 1, q_heads + 2 * kv_heads, dim, generator=g) * 3).to(dev, dt)
    q_norm, k_norm = (torch.rand(dim, generator=g) + 0.5).to(dev, dt), (torch.rand(dim, generator=g) + 0.5).to(dev, dt)
    angles = torch.rand(batch, 1, dim // 2, generator=g) * 40
    cos, sin = torch.cat([angles.cos()] * 2, -1).to(dev, dt), torch.cat([angles.sin()] * 2, -1).to(dev, dt)
    keys = torch.randn(batch, kv_heads, length, dim, generator=g).to(dev, dt)
    values = torch.randn(batch, kv_heads, length, dim, generator=g).to(dev, dt)
    q = da.prepare_attention(qkv, q_norm, k_norm, cos, sin, torch.tensor([pos], device=dev), keys, values, q_heads,
                             1e-6)
    eager = _prepare_reference(qkv, q_norm, k_norm, cos, sin, q_heads, 1e-6)
    exact = _prepare_reference(*(t.float() for t in (qkv, q_norm, k_norm, cos, sin)), q_heads, 1e-6)
    _no_less_accurate(q.view(batch, q_heads, dim), eager[0][:, :, 0], exact[0][:, :, 0], "queries")
    _no_less_accurate(keys[:, :, pos], eager[1][:, :, 0], exact[1][:, :, 0], "keys")
    assert torch.equal(values[:, :, pos], eager[2][:, :, 0])

    bias = torch.zeros(batch, length, device=dev)
    bias[:, pos + 1:] = float("-inf")
    bias[1, :100] = float("-inf")  # row 1 left-padded
    h = batch * kv_heads
    grouped = q.view(h, q_heads // kv_heads, dim)
    out = da.decode_attention(grouped, keys.view(h, length, dim), values.view(h, length, dim), bias,
                              torch.tensor([pos], device=dev), dim ** -0.5)
    ref = _reference(grouped.float(), keys.view(h, length, dim).float(), values.view(h, length, dim).float(), bias,
                     kv_heads, dim ** -0.5)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)

    x = (torch.randn(batch, 1, 2560, generator=g) * 5).to(dev, dt)
    w = (torch.rand(2560, generator=g) + 0.5).to(dev, dt)
    _no_less_accurate(da.rms_norm(x, w, 1e-6), _prepare_reference_norm(x, w, 1e-6),
                      _prepare_reference_norm(x.float(), w.float(), 1e-6), "RMSNorm")

    gate_up = (torch.randn(batch, 1, 2 * 9728, generator=g) * 4).to(dev, dt)
    gate, up = gate_up.chunk(2, dim=-1)
    _no_less_accurate(da.silu_mul(gate_up), torch.nn.functional.silu(gate) * up,
                      torch.nn.functional.silu(gate.float()) * up.float(), "silu * up")
