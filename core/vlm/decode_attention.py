"""Attention of one new token per row over a long KV cache, split over the cache (flash-decoding), in Triton.

After a 12,500-token video prompt each decoded token reads 1.8 GB of cached keys and values (4B shape),
a fifth of the weights' bytes. Written as matrix products (`core.vlm.leanstep`'s portable path), the
(group x L) @ (L x head_dim) product of each K/V head keeps only a few of the GPU's 132 SMs busy. Here
each program reads one chunk of one K/V head's cache once, for all the query heads of its group
(grouped-query attention without expansion), keeps an online softmax, and writes a partial result;
the partials are merged with their log-sum-exp weights. Chunks past the current position are skipped,
so the unused tail of a static cache costs nothing.

Used by the lean decode step on CUDA with bf16/fp16 weights when Triton is importable; everything else
takes the matrix-product path. `VLSCOPE_DECODE_ATTENTION=torch` forces the matrix-product path. The tests
run the kernel on the CPU under Triton's interpreter (`TRITON_INTERPRET=1` set before Triton is imported, plus
`VLSCOPE_DECODE_ATTENTION=triton`).
"""

from __future__ import annotations

import os
from typing import Any

_KERNEL: Any = None
GROUP_PAD = 16  # query rows per program: the group padded to the smallest tensor-core tile
BLOCK_N = 64  # cached positions per inner step


def unavailable_reason(device: Any, dtype: Any) -> str | None:
    """Why the Triton kernel will not be used for this device and dtype (None when it will)."""
    import torch

    mode = os.environ.get("VLSCOPE_DECODE_ATTENTION", "").lower()
    if mode == "torch":
        return "VLSCOPE_DECODE_ATTENTION=torch"
    if getattr(device, "type", str(device)) != "cuda":
        if not (mode == "triton" and os.environ.get("TRITON_INTERPRET") == "1"):  # the tests' CPU run
            return "not a CUDA device"
    elif dtype not in (torch.bfloat16, torch.float16):
        return f"{dtype} weights (the kernel is for bf16/fp16)"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "Triton is not installed"
    return None


def _kernel() -> Any:
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import triton
    import triton.language as tl

    @triton.jit
    def partial_attention(
        q_ptr, k_ptr, v_ptr, bias_ptr, pos_ptr, acc_ptr, max_ptr, sum_ptr,
        stride_qh, stride_qg, stride_kh, stride_kn, stride_vh, stride_vn, stride_bias,
        stride_ah, stride_as, stride_ag, stride_mh, stride_ms,
        kv_heads, scale,
        GROUP: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, CHUNK: tl.constexpr, BN: tl.constexpr,
        BIAS_PER_ROW: tl.constexpr,
    ):
        head = tl.program_id(0)  # batch row * kv_heads + K/V head
        split = tl.program_id(1)
        row = head // kv_heads
        pos = tl.load(pos_ptr)  # last written cache index: keys beyond it are not read
        g = tl.arange(0, GP)
        d = tl.arange(0, D)
        q = tl.load(q_ptr + head * stride_qh + g[:, None] * stride_qg + d[None, :], mask=g[:, None] < GROUP, other=0.0)
        m_i = tl.full([GP], -1.0e30, tl.float32)
        l_i = tl.zeros([GP], tl.float32)
        acc = tl.zeros([GP, D], tl.float32)
        start = split * CHUNK
        end = tl.minimum(start + CHUNK, pos + 1)
        bias_row = bias_ptr + row * stride_bias if BIAS_PER_ROW else bias_ptr
        for n0 in range(start, end, BN):
            n = n0 + tl.arange(0, BN)
            live = n < end
            k = tl.load(k_ptr + head * stride_kh + n[:, None] * stride_kn + d[None, :], mask=live[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * scale
            s = s + tl.load(bias_row + n, mask=live, other=float("-inf"))[None, :]
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_ptr + head * stride_vh + n[:, None] * stride_vn + d[None, :], mask=live[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        keep = g < GROUP
        tl.store(acc_ptr + head * stride_ah + split * stride_as + g[:, None] * stride_ag + d[None, :], acc,
                 mask=keep[:, None])
        tl.store(max_ptr + head * stride_mh + split * stride_ms + g, m_i, mask=keep)
        tl.store(sum_ptr + head * stride_mh + split * stride_ms + g, l_i, mask=keep)

    @triton.jit
    def merge_splits(
        acc_ptr, max_ptr, sum_ptr, out_ptr, splits,
        stride_ah, stride_as, stride_ag, stride_mh, stride_ms, stride_oh, stride_og,
        GROUP: tl.constexpr, SP: tl.constexpr, D: tl.constexpr,
    ):
        head = tl.program_id(0)
        row = tl.program_id(1)  # one query row of the group
        sp = tl.arange(0, SP)
        d = tl.arange(0, D)
        live = sp < splits
        m_s = tl.load(max_ptr + head * stride_mh + sp * stride_ms + row, mask=live, other=-1.0e30)
        l_s = tl.load(sum_ptr + head * stride_mh + sp * stride_ms + row, mask=live, other=0.0)
        a_s = tl.load(acc_ptr + head * stride_ah + sp[:, None] * stride_as + row * stride_ag + d[None, :],
                      mask=live[:, None], other=0.0)
        w = tl.exp(m_s - tl.max(m_s, 0))  # each split's partial sums, rescaled to the overall maximum
        out = tl.sum(a_s * w[:, None], 0) / tl.sum(l_s * w, 0)
        tl.store(out_ptr + head * stride_oh + row * stride_og + d, out.to(out_ptr.dtype.element_ty))

    _KERNEL = (partial_attention, merge_splits)
    return _KERNEL


def chunk_for(length: int) -> int:
    """Cached positions per program: small caches in small chunks (enough programs), long ones in 256 or more
    (at most 128 chunks, which the merge reads at once)."""
    if length <= 2048:
        return 64
    if length <= 8192:
        return 128
    chunk = 256
    while length > 128 * chunk:
        chunk *= 2
    return chunk


_OP: Any = None


def register_op() -> Any:
    """`decode_attention` as the custom op `vlscope::decode_attention`, so torch.compile keeps it as one opaque
    call (Inductor fails to re-compile this user kernel in torch 2.11) and fuses everything around it. Call it
    outside compiled code, once (the lean step does, when it picks this kernel)."""
    global _OP
    if _OP is None:
        import torch

        schema = "(Tensor q, Tensor keys, Tensor values, Tensor bias, Tensor cache_position, float scale) -> Tensor"

        @torch.library.custom_op("vlscope::decode_attention", mutates_args=(), schema=schema)
        def op(q, keys, values, bias, cache_position, scale):  # noqa: ANN001, ANN202 - typed by the schema
            return _decode_attention(q, keys, values, bias, cache_position, scale)

        @op.register_fake
        def _(q, keys, values, bias, cache_position, scale):  # noqa: ANN001, ANN202 - shapes only
            return torch.empty_like(q)

        _OP = op
    return _OP


def decode_attention(q: Any, keys: Any, values: Any, bias: Any, cache_position: Any, scale: float) -> Any:
    """softmax(q K^T * scale + bias) V for grouped query rows (through the custom op once registered).

    q (H, group, D) with H = batch * kv_heads; keys / values (H, L, D) (last dim contiguous); bias (1 or batch, L)
    float32 additive mask (0 or -inf); cache_position (1,) the last written index. Returns (H, group, D) in q's dtype.
    """
    if _OP is not None:
        return _OP(q.contiguous(), keys, values, bias, cache_position, scale)
    return _decode_attention(q, keys, values, bias, cache_position, scale)


def _decode_attention(q: Any, keys: Any, values: Any, bias: Any, cache_position: Any, scale: float) -> Any:
    """softmax(q K^T * scale + bias) V for grouped query rows.

    q (H, group, D) with H = batch * kv_heads; keys / values (H, L, D) (last dim contiguous); bias (1 or batch, L)
    float32 additive mask (0 or -inf); cache_position (1,) the last written index. Returns (H, group, D) in q's dtype.
    """
    import torch
    import triton

    heads, group, dim = q.shape
    length = keys.shape[1]
    if group > GROUP_PAD or dim & (dim - 1) or dim < 16:
        raise ValueError(f"decode attention needs group <= {GROUP_PAD} and a power-of-two head_dim >= 16")
    chunk = chunk_for(length)
    splits = triton.cdiv(length, chunk)
    acc = torch.empty((heads, splits, group, dim), dtype=torch.float32, device=q.device)
    maxes = torch.empty((heads, splits, group), dtype=torch.float32, device=q.device)
    sums = torch.empty_like(maxes)
    bias = bias.reshape(-1, length)
    partial_attention, merge_splits = _kernel()
    partial_attention[(heads, splits)](
        q, keys, values, bias, cache_position, acc, maxes, sums,
        q.stride(0), q.stride(1), keys.stride(0), keys.stride(1), values.stride(0), values.stride(1), bias.stride(0),
        acc.stride(0), acc.stride(1), acc.stride(2), maxes.stride(0), maxes.stride(1),
        heads // bias.shape[0], scale,
        GROUP=group, GP=GROUP_PAD, D=dim, CHUNK=chunk, BN=BLOCK_N, BIAS_PER_ROW=bias.shape[0] > 1,
    )
    # merge the splits: each partial sum is rescaled from its own running maximum to the overall one
    out = torch.empty((heads, group, dim), dtype=q.dtype, device=q.device)
    merge_splits[(heads, group)](
        acc, maxes, sums, out, splits,
        acc.stride(0), acc.stride(1), acc.stride(2), maxes.stride(0), maxes.stride(1), out.stride(0), out.stride(1),
        GROUP=group, SP=triton.next_power_of_2(splits), D=dim,
    )
    return out
