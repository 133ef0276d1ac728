"""Run official Qwen3-VL "-FP8" checkpoints without the Hugging Face hub kernel.

Those checkpoints use transformers' finegrained FP8: each Linear weight is `float8_e4m3fn` (N, K)
with a float32 `weight_scale_inv` of shape (ceil(N/128), ceil(K/128)), one scale per 128x128 block.
In transformers 5.x `FP8Linear.forward` calls a Triton kernel that is downloaded at run time from
`kernels-community/finegrained-fp8` through the `kernels` package (and DeepGEMM, also from the hub,
when loadable). On an offline GPU machine, or without `kernels`, the first forward raises
`ImportError` and an FP8 checkpoint cannot run at all.

`install_offline_fp8_kernel()` registers a pure-PyTorch implementation of the same entry points
(`matmul_2d`, `matmul_batched`, `matmul_grouped`) in place of the hub kernel, only when the hub
kernel cannot be used. It never downloads anything.

Cost: every call reads the FP8 weight and writes a dequantised copy (in the activation dtype) before
a regular matmul, so decoding is slower than with bf16 weights (more memory traffic per step) and
much slower than the fused FP8 kernel. What is kept is the memory saving: weights at rest stay FP8
(1 byte per parameter); the dequantised copy is a per-call temporary, bounded by `_CHUNK_ELEMENTS`.

Accuracy: the hub kernel also quantises activations to FP8 (per token, per 128 columns); this
fallback keeps activations in their own dtype and only dequantises the weights, so its result is at
least as accurate (closer to the original bf16 model; not bit-identical to the FP8 kernel). The
dequantised weights equal those of transformers' own `dequantize=True` load (float32 product,
rounded once to the activation dtype).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import torch

KERNEL_NAME = "finegrained-fp8"
HUB_KERNEL_AVAILABLE = "hub kernel available"
FALLBACK_REGISTERED = "offline fallback registered (weights dequantised per call: memory of FP8, speed below bf16)"
FALLBACK_ALREADY_REGISTERED = "offline fallback already registered"

# Largest dequantised temporary per call, in elements (64 Mi elements = 128 MiB in bf16). Bigger
# weights are processed in chunks of output rows, so peak memory stays bounded.
_CHUNK_ELEMENTS = 64 * 2**20

_FLOAT_COMPUTE_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


# --------------------------------------------------------------------------------------------------
# Pure-PyTorch block-FP8 math
# --------------------------------------------------------------------------------------------------


def _compute_dtype(input: torch.Tensor) -> torch.dtype:
    return input.dtype if input.dtype in _FLOAT_COMPUTE_DTYPES else torch.float32


def _check_fp8_weight(weight: torch.Tensor) -> None:
    if weight.element_size() != 1:
        raise TypeError(f"expected an FP8 weight (1 byte per element), got {weight.dtype}")
    fp4 = getattr(torch, "float4_e2m1fn_x2", None)
    if weight.dtype in (torch.int8, torch.uint8) or (fp4 is not None and weight.dtype == fp4):
        raise NotImplementedError(
            "FP4-packed weights are not supported by the VLScope offline FP8 fallback (FP8 only)."
        )


def dequantize_block_fp8(
    weight: torch.Tensor,
    weight_scale_inv: torch.Tensor,
    block_size: list[int] | tuple[int, int] | None,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Return `weight` (..., N, K) times its per-block scales, as a new tensor of `dtype`.

    `weight_scale_inv` is (..., ceil(N/bn), ceil(K/bk)) for `block_size = (bn, bk)`; the last row /
    column of blocks may be partial when N or K is not a multiple of the block. With
    `block_size=None` the scale is per tensor (a scalar). The scale multiplies `weight` (so despite
    its name it is the dequantisation factor, as in transformers).
    """
    _check_fp8_weight(weight)
    w = weight.to(dtype)  # exact: every float8_e4m3fn value is representable in bf16 / fp16 / fp32
    # The scales stay float32: the in-place multiply below computes in float32 and rounds once to
    # `dtype` (no float32 copy of the weight), which is what transformers' own dequantisation gives.
    scale = weight_scale_inv.to(torch.float32)
    if block_size is None or scale.numel() == 1:
        return w.mul_(scale.reshape(()) if scale.numel() == 1 else scale)
    block_n, block_k = int(block_size[0]), int(block_size[1])
    rows, cols = w.shape[-2:]
    if scale.shape[-2] * block_n < rows or scale.shape[-1] * block_k < cols:
        raise ValueError(
            f"scale grid {tuple(scale.shape[-2:])} with block {block_n}x{block_k} does not cover "
            f"weight {tuple(w.shape[-2:])}"
        )
    # Expand the scales over rows only; broadcast them over the columns of each block through a view
    # of the weight, so no second weight-sized tensor is built.
    scale = scale.repeat_interleave(block_n, dim=-2)[..., :rows, :]
    full, rem = divmod(cols, block_k)
    if full:
        w[..., : full * block_k].unflatten(-1, (full, block_k)).mul_(scale[..., :full, None])
    if rem:
        w[..., full * block_k :].mul_(scale[..., full : full + 1])
    return w


def block_fp8_linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    weight_scale_inv: torch.Tensor,
    block_size: list[int] | tuple[int, int] | None,
    bias: torch.Tensor | None = None,
    output_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """y = input @ dequant(weight)^T (+ bias), for `input` (..., K) and an FP8 `weight` (N, K).

    The weight is dequantised in the activation dtype (float32 for non-float inputs), in chunks of
    output rows when it is larger than `_CHUNK_ELEMENTS`.
    """
    _check_fp8_weight(weight)
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight (N, K), got shape {tuple(weight.shape)}")
    n, k = weight.shape
    if input.shape[-1] != k:
        raise ValueError(f"input has {input.shape[-1]} features, weight expects {k}")
    dtype = _compute_dtype(input)
    out_dtype = output_dtype or (input.dtype if input.dtype in _FLOAT_COMPUTE_DTYPES else torch.bfloat16)
    x = input.to(dtype)
    bias_c = None if bias is None else bias.to(dtype)

    per_tensor = block_size is None or weight_scale_inv.numel() == 1
    block_n = n if per_tensor else int(block_size[0])
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(k, 1))
    if rows_per_chunk >= n:
        w = dequantize_block_fp8(weight, weight_scale_inv, block_size, dtype)
        y = torch.nn.functional.linear(x, w, bias_c)
    else:
        if not per_tensor:  # chunk boundaries on block boundaries, so each chunk owns its scale rows
            rows_per_chunk = max(block_n, rows_per_chunk // block_n * block_n)
        y = x.new_empty((*x.shape[:-1], n))
        for start in range(0, n, rows_per_chunk):
            stop = min(start + rows_per_chunk, n)
            if per_tensor:
                scale = weight_scale_inv
            else:
                scale = weight_scale_inv[start // block_n : (stop + block_n - 1) // block_n]
            w = dequantize_block_fp8(weight[start:stop], scale, block_size, dtype)
            y[..., start:stop] = torch.nn.functional.linear(
                x, w, None if bias_c is None else bias_c[start:stop]
            )
            del w
    return y if y.dtype == out_dtype else y.to(out_dtype)


# --------------------------------------------------------------------------------------------------
# Entry points with the hub kernel's signatures (as called by transformers 5.17 and 5.24)
# --------------------------------------------------------------------------------------------------


def matmul_2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    weight_scale_inv: torch.Tensor,
    block_size: list[int] | tuple[int, int] | None = None,
    output_dtype: torch.dtype | None = None,
    activation_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """`kernels-community/finegrained-fp8` `matmul_2d`: input (..., K) @ FP8 weight (N, K)^T -> (..., N).

    Called by `transformers.integrations.finegrained_fp8.finegrained_fp8_linear` as
    `matmul(input, weight, weight_scale_inv, block_size, input.dtype, activation_scale=...)`; the
    bias is added by the caller, in place, to the fresh tensor returned here.
    `activation_scale` (static activation quantisation) is accepted and not applied: activations
    are not quantised at all here, which is at least as accurate.
    """
    del activation_scale
    return block_fp8_linear(input, weight, weight_scale_inv, block_size, None, output_dtype)


def matmul_batched(
    input: torch.Tensor,
    weight: torch.Tensor,
    weight_scale_inv: torch.Tensor,
    block_size: list[int] | tuple[int, int] | None = None,
    expert_ids: torch.Tensor | None = None,
    output_dtype: torch.dtype | None = None,
    activation_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """MoE "batched_mm": row s of input (S, K) goes through expert `expert_ids[s]` of weight (E, N, K).

    Rows whose expert id is >= E (expert-parallel sentinels) are returned as zeros.
    """
    del activation_scale
    if expert_ids is None:
        raise ValueError("matmul_batched needs expert_ids")
    num_experts, n, _ = weight.shape
    out_dtype = output_dtype or input.dtype
    out = input.new_zeros((input.shape[0], n), dtype=out_dtype)
    ids = expert_ids.reshape(-1)
    for expert in torch.unique(ids).tolist():
        if not 0 <= expert < num_experts:
            continue
        rows = (ids == expert).nonzero(as_tuple=True)[0]
        out[rows] = block_fp8_linear(
            input[rows], weight[expert], weight_scale_inv[expert], block_size, None, out_dtype
        )
    return out


def matmul_grouped(
    input: torch.Tensor,
    weight: torch.Tensor,
    weight_scale_inv: torch.Tensor,
    offsets: torch.Tensor | None = None,
    tokens_per_expert: torch.Tensor | None = None,
    block_size: list[int] | tuple[int, int] | None = None,
    output_dtype: torch.dtype | None = None,
    activation_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """MoE "grouped_mm": input (S, K) is sorted by expert; rows [offsets[e-1], offsets[e]) use expert e.

    `offsets` is the inclusive cumulative sum of `tokens_per_expert`. Rows past `offsets[-1]`
    (expert-parallel sentinels) are returned as zeros.
    """
    del activation_scale
    if offsets is None:
        if tokens_per_expert is None:
            raise ValueError("matmul_grouped needs offsets or tokens_per_expert")
        offsets = torch.cumsum(tokens_per_expert.to(torch.int64), dim=0)
    num_experts, n, _ = weight.shape
    out_dtype = output_dtype or input.dtype
    out = input.new_zeros((input.shape[0], n), dtype=out_dtype)
    ends = [int(v) for v in offsets.reshape(-1).tolist()]
    start = 0
    for expert, stop in enumerate(ends[:num_experts]):
        stop = min(stop, input.shape[0])
        if stop > start:
            out[start:stop] = block_fp8_linear(
                input[start:stop], weight[expert], weight_scale_inv[expert], block_size, None, out_dtype
            )
        start = max(start, stop)
    return out


# --------------------------------------------------------------------------------------------------
# Registration in transformers
# --------------------------------------------------------------------------------------------------


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_offline() -> bool:
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        return True
    try:
        from huggingface_hub import constants

        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    except Exception:
        return False


def _is_ours(bundle: Any) -> bool:
    return getattr(bundle, "matmul", None) is matmul_2d


def _hub_kernel_unusable(tf_fp8: Any, hub_kernels: Any) -> str | None:
    """Why the hub kernel cannot be used here, or None when it can (or will be fetched on first use)."""
    from transformers.utils.import_utils import is_kernels_available

    if not is_kernels_available():
        return "no compatible `kernels` package"
    if not getattr(hub_kernels, "_kernels_enabled", True):
        return "hub kernels disabled (USE_HUB_KERNELS)"
    if not torch.cuda.is_available():
        return "no CUDA device for the Triton hub kernel"
    if not _hub_offline():
        return None  # transformers would download it on first use; probing here could download
    try:  # offline: this only looks in the local cache, it cannot download
        tf_fp8._load_finegrained_fp8_kernel()
    except Exception as exc:  # any failure means "not usable"
        return f"hub kernel not loadable offline ({type(exc).__name__}: {exc})".replace("\n", " ")
    return None


def install_offline_fp8_kernel(force: bool = False) -> str:
    """Register the pure-PyTorch fallback as transformers' "finegrained-fp8" kernel when needed.

    Hook (same in transformers 5.17 and 5.24): `finegrained_fp8._load_finegrained_fp8_kernel()`
    returns at once when the module global `_FINEGRAINED_FP8` is set, and only afterwards checks
    `is_kernels_available()` and calls `lazy_load_kernel("finegrained-fp8")`. Registering a module
    in `hub_kernels._KERNEL_MODULE_MAPPING` alone is therefore not enough without `kernels`, so
    this sets `_FINEGRAINED_FP8` to a `FineGrainedFP8(matmul, batched_matmul, grouped_matmul)`
    bundle of our functions, and also maps "finegrained-fp8" to this module (which
    `lazy_load_kernel` returns as is, as a `types.ModuleType`).

    Registers only when the hub kernel is not usable: no `kernels` package, hub kernels disabled,
    no CUDA, or hub offline and the kernel not loadable from the local cache; `force=True`
    registers regardless. Idempotent; never downloads. Returns one line saying what it did.
    """
    try:
        from transformers.integrations import finegrained_fp8 as tf_fp8
        from transformers.integrations import hub_kernels
    except Exception as exc:  # transformers too old or too new
        return f"nothing done: transformers has no finegrained FP8 integration ({type(exc).__name__}: {exc})"
    needed = ("_FINEGRAINED_FP8", "FineGrainedFP8", "_load_finegrained_fp8_kernel")
    missing = [name for name in needed if not hasattr(tf_fp8, name)]
    if missing or not isinstance(getattr(hub_kernels, "_KERNEL_MODULE_MAPPING", None), dict):
        missing = missing or ["hub_kernels._KERNEL_MODULE_MAPPING"]
        return f"nothing done: unsupported transformers version (missing {', '.join(missing)})"
    fields = {f.name for f in dataclasses.fields(tf_fp8.FineGrainedFP8)}
    if fields != {"matmul", "batched_matmul", "grouped_matmul"}:
        return f"nothing done: unsupported transformers version (FineGrainedFP8 fields {sorted(fields)})"

    current = tf_fp8._FINEGRAINED_FP8
    if _is_ours(current):
        return FALLBACK_ALREADY_REGISTERED
    if current is not None and not force:
        return f"{HUB_KERNEL_AVAILABLE} (already loaded)"
    if force:
        reason = "forced"
    else:
        reason = _hub_kernel_unusable(tf_fp8, hub_kernels)
        if reason is None:
            if tf_fp8._FINEGRAINED_FP8 is not None:
                return f"{HUB_KERNEL_AVAILABLE} (loaded from the local cache)"
            return f"{HUB_KERNEL_AVAILABLE} (`kernels` installed, hub online: fetched on first use)"

    tf_fp8._FINEGRAINED_FP8 = tf_fp8.FineGrainedFP8(
        matmul=matmul_2d, batched_matmul=matmul_batched, grouped_matmul=matmul_grouped
    )
    hub_kernels._KERNEL_MODULE_MAPPING[KERNEL_NAME] = sys.modules[__name__]
    note = ""
    try:
        from transformers.utils.import_utils import is_kernels_available

        # With `kernels` installed, fp8_linear would still try the hub's DeepGEMM first on every call.
        if is_kernels_available() and "TRANSFORMERS_DISABLE_DEEPGEMM_LINEAR" not in os.environ:
            os.environ["TRANSFORMERS_DISABLE_DEEPGEMM_LINEAR"] = "1"
            note = "; DeepGEMM linear disabled"
    except Exception:
        pass
    return f"{FALLBACK_REGISTERED}: {reason}{note}"
