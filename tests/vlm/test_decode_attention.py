"""The split-over-the-cache decode attention kernel (Triton), run on the CPU by Triton's interpreter.

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

from core.vlm import decode_attention as da  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(INTERPRETED, reason="this is the child run")
def test_kernels_under_the_triton_interpreter() -> None:
    env = dict(os.environ, TRITON_INTERPRET="1", VLSCOPE_DECODE_ATTENTION="triton")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "interpreted",
         str(Path(__file__).relative_to(ROOT)), "tests/vlm/test_lean_step.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "8 passed" in run.stdout and "skipped" not in run.stdout  # 5 kernel checks + 3 lean-step checks


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
    monkeypatch.delenv("VLSCOPE_DECODE_ATTENTION", raising=False)
    assert da.unavailable_reason(torch.device("cpu"), torch.bfloat16) == "not a CUDA device"
    assert "float32" in da.unavailable_reason(torch.device("cuda"), torch.float32)
    assert da.unavailable_reason(torch.device("cuda"), torch.bfloat16) is None
    monkeypatch.setenv("VLSCOPE_DECODE_ATTENTION", "torch")
    assert da.unavailable_reason(torch.device("cuda"), torch.bfloat16) == "VLSCOPE_DECODE_ATTENTION=torch"
    with pytest.raises(ValueError, match="power-of-two head_dim"):
        da.decode_attention(torch.zeros(1, 2, 24), torch.zeros(1, 64, 24), torch.zeros(1, 64, 24), torch.zeros(1, 64),
                            torch.tensor([3]), 1.0)
