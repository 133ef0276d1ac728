"""Triton kernels of the lean decode step: attention over a long KV cache, and the per-head work before it.

**Attention, split over the cache (flash-decoding).** After a 12,500-token video prompt each decoded token
reads 1.8 GB of cached keys and values (4B shape), a fifth of the weights' bytes. Written as matrix products
(`core.vlm.leanstep`'s portable path), the (group x L) @ (L x head_dim) product of each K/V head keeps only a
few of the GPU's 132 SMs busy. Here each program reads one chunk of one K/V head's cache once, for all the
query heads of its group (grouped-query attention without expansion), keeps an online softmax, and writes a
partial result; the partials are merged with their log-sum-exp weights. Chunks past the current position are
skipped, so the unused tail of a static cache costs nothing.

**Preparing q, k and v (`prepare_attention`).** Between the q/k/v projection and the attention, PyTorch
runs seven small kernels per layer for one token: q/k RMSNorm, its weight, the rotary embedding (flip, a
product, a multiply-add) and two cache writes. Each takes 2 to 3 microseconds for a few kilobytes;
in a CUDA graph their count, not their bytes, is the cost. One program per head does all of it: normalise
(q and k heads), rotate, and write q to the attention's input and k / v into the cache at the current index.
The kernel rounds where transformers' eager code rounds (each product to the model's dtype): under Triton's
interpreter the results equal transformers' in float16 bit for bit. Compiled for the GPU, about a fifth of the
bf16 values differ from eager by one step in the last bit, and they are no further from a float32 computation
than eager bf16 is (tests/vlm/test_decode_kernels.py checks both).

**The gated activation (`silu_mul`)** as one kernel instead of two, and **RMSNorm (`rms_norm`)** of the hidden
state, rounded as transformers rounds it.

Used by the lean decode step on CUDA with bf16/fp16 weights when Triton is importable; everything else
takes the PyTorch path. The setting `decode_kernels` = `torch` (VLSCOPE_DECODE_KERNELS=torch) forces the
PyTorch path. The tests run the kernels on the CPU under Triton's interpreter (`TRITON_INTERPRET=1` set before
Triton is imported, plus `decode_kernels` = `triton`).
"""

from __future__ import annotations

import os
from typing import Any

_KERNEL: Any = None
GROUP_PAD = 16  # query rows per program: the group padded to the smallest tensor-core tile
BLOCK_N = 64  # cached positions per inner step


def unavailable_reason(device: Any, dtype: Any, mode: str = "auto") -> str | None:
    """Why the Triton kernels will not be used for this device and dtype (None when it will).

    `mode` is the `decode_kernels` setting: "auto", "torch" (never the kernels) or "triton" (also on the CPU
    under Triton's interpreter, TRITON_INTERPRET=1).
    """
    import torch

    if mode == "torch":
        return "VLSCOPE_DECODE_KERNELS=torch"
    if getattr(device, "type", str(device)) != "cuda":
        if not (mode == "triton" and os.environ.get("TRITON_INTERPRET") == "1"):  # the tests' CPU run
            return "not a CUDA device"
    elif dtype not in (torch.bfloat16, torch.float16):
        return f"{dtype} weights (the kernels are for bf16/fp16)"
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

    @triton.jit
    def prepare_attention(
        qkv_ptr, q_norm_ptr, k_norm_ptr, cos_ptr, sin_ptr, pos_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr,
        stride_row, stride_cos, stride_kh, stride_kn, stride_vh, stride_vn,
        q_heads, kv_heads, eps,
        D: tl.constexpr, HALF: tl.constexpr,
    ):
        row = tl.program_id(0)
        head = tl.program_id(1)  # q heads, then k heads, then v heads, as the fused projection lays them out
        out_ty = q_out_ptr.dtype.element_ty
        i = tl.arange(0, HALF)
        src = qkv_ptr + row * stride_row + head * D
        x1 = tl.load(src + i)
        x2 = tl.load(src + HALF + i)
        pos = tl.load(pos_ptr)
        if head < q_heads + kv_heads:
            a1 = x1.to(tl.float32)
            a2 = x2.to(tl.float32)
            r = 1.0 / tl.sqrt_rn((tl.sum(a1 * a1, 0) + tl.sum(a2 * a2, 0)) / D + eps)
            is_q = head < q_heads
            w1 = tl.where(is_q, tl.load(q_norm_ptr + i), tl.load(k_norm_ptr + i)).to(tl.float32)
            w2 = tl.where(is_q, tl.load(q_norm_ptr + HALF + i), tl.load(k_norm_ptr + HALF + i)).to(tl.float32)
            # RMSNorm as transformers: normalise in float32, round, times the weight, round
            y1 = (w1 * (a1 * r).to(out_ty).to(tl.float32)).to(out_ty).to(tl.float32)
            y2 = (w2 * (a2 * r).to(out_ty).to(tl.float32)).to(out_ty).to(tl.float32)
            c1 = tl.load(cos_ptr + row * stride_cos + i).to(tl.float32)
            c2 = tl.load(cos_ptr + row * stride_cos + HALF + i).to(tl.float32)
            s1 = tl.load(sin_ptr + row * stride_cos + i).to(tl.float32)
            s2 = tl.load(sin_ptr + row * stride_cos + HALF + i).to(tl.float32)
            # x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1); each product rounded as in eager code
            o1 = ((y1 * c1).to(out_ty).to(tl.float32) + (-y2 * s1).to(out_ty).to(tl.float32)).to(out_ty)
            o2 = ((y2 * c2).to(out_ty).to(tl.float32) + (y1 * s2).to(out_ty).to(tl.float32)).to(out_ty)
            if is_q:  # (rows * q_heads, head_dim): query heads stay grouped under their K/V head
                dst = q_out_ptr + (row * q_heads + head) * D
            else:
                dst = k_cache_ptr + (row * kv_heads + head - q_heads) * stride_kh + pos * stride_kn
            tl.store(dst + i, o1)
            tl.store(dst + HALF + i, o2)
        else:
            dst = v_cache_ptr + (row * kv_heads + head - q_heads - kv_heads) * stride_vh + pos * stride_vn
            tl.store(dst + i, x1)
            tl.store(dst + HALF + i, x2)

    @triton.jit
    def silu_mul(gate_up_ptr, out_ptr, stride_row, stride_out, width, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        live = i < width
        out_ty = out_ptr.dtype.element_ty
        gate = tl.load(gate_up_ptr + row * stride_row + i, mask=live, other=0.0).to(tl.float32)
        up = tl.load(gate_up_ptr + row * stride_row + width + i, mask=live, other=0.0).to(tl.float32)
        act = (gate / (1.0 + tl.exp(-gate))).to(out_ty).to(tl.float32)  # silu, rounded as the module's output
        tl.store(out_ptr + row * stride_out + i, (act * up).to(out_ty), mask=live)

    @triton.jit
    def rms_norm(x_ptr, w_ptr, out_ptr, stride_x, stride_out, width, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        i = tl.arange(0, BLOCK)
        live = i < width
        out_ty = out_ptr.dtype.element_ty
        x = tl.load(x_ptr + row * stride_x + i, mask=live, other=0.0).to(tl.float32)
        r = 1.0 / tl.sqrt_rn(tl.sum(x * x, 0) / width + eps)
        w = tl.load(w_ptr + i, mask=live, other=0.0).to(tl.float32)
        # as transformers: normalise in float32, round to the model's dtype, times the weight, round
        tl.store(out_ptr + row * stride_out + i, (w * (x * r).to(out_ty).to(tl.float32)).to(out_ty), mask=live)

    _KERNEL = {"partial_attention": partial_attention, "merge_splits": merge_splits,
               "prepare_attention": prepare_attention, "silu_mul": silu_mul, "rms_norm": rms_norm}
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


_OPS: dict[str, Any] = {}


def register_ops() -> None:
    """The kernels as the custom ops `vlscope::decode_attention`, `vlscope::prepare_attention` and
    `vlscope::silu_mul`, so torch.compile keeps each as one opaque call (Inductor fails to re-compile these user
    kernels in torch 2.11) and fuses everything around them. Call it outside compiled code, once (the lean step
    does, when it picks these kernels)."""
    if _OPS:
        return
    import torch

    lib = torch.library

    @lib.custom_op("vlscope::decode_attention", mutates_args=(), schema=(
        "(Tensor q, Tensor keys, Tensor values, Tensor bias, Tensor cache_position, float scale) -> Tensor"))
    def attention_op(q, keys, values, bias, cache_position, scale):  # noqa: ANN001, ANN202 - typed by the schema
        return _decode_attention(q, keys, values, bias, cache_position, scale)

    @attention_op.register_fake
    def _(q, keys, values, bias, cache_position, scale):  # noqa: ANN001, ANN202 - shapes only
        return torch.empty_like(q)

    @lib.custom_op("vlscope::prepare_attention", mutates_args=("keys", "values"), schema=(
        "(Tensor qkv, Tensor q_norm, Tensor k_norm, Tensor cos, Tensor sin, Tensor cache_position, "
        "Tensor(a!) keys, Tensor(b!) values, int q_heads, float eps) -> Tensor"))
    def prepare_op(qkv, q_norm, k_norm, cos, sin, cache_position, keys, values, q_heads, eps):  # noqa: ANN001, ANN202
        return _prepare_attention(qkv, q_norm, k_norm, cos, sin, cache_position, keys, values, q_heads, eps)

    @prepare_op.register_fake
    def _(qkv, q_norm, k_norm, cos, sin, cache_position, keys, values, q_heads, eps):  # noqa: ANN001, ANN202
        return qkv.new_empty((qkv.shape[0] * q_heads, qkv.shape[-1]))

    @lib.custom_op("vlscope::silu_mul", mutates_args=(), schema="(Tensor gate_up) -> Tensor")
    def silu_mul_op(gate_up):  # noqa: ANN001, ANN202 - typed by the schema
        return _silu_mul(gate_up)

    @silu_mul_op.register_fake
    def _(gate_up):  # noqa: ANN001, ANN202 - shapes only
        return gate_up.new_empty((*gate_up.shape[:-1], gate_up.shape[-1] // 2))

    @lib.custom_op("vlscope::rms_norm", mutates_args=(), schema="(Tensor x, Tensor weight, float eps) -> Tensor")
    def rms_norm_op(x, weight, eps):  # noqa: ANN001, ANN202 - typed by the schema
        return _rms_norm(x, weight, eps)

    @rms_norm_op.register_fake
    def _(x, weight, eps):  # noqa: ANN001, ANN202 - shapes only
        return torch.empty_like(x)

    _OPS.update(decode_attention=attention_op, prepare_attention=prepare_op, silu_mul=silu_mul_op,
                rms_norm=rms_norm_op)


def decode_attention(q: Any, keys: Any, values: Any, bias: Any, cache_position: Any, scale: float) -> Any:
    """softmax(q K^T * scale + bias) V for grouped query rows (through the custom op once registered).

    q (H, group, D) with H = batch * kv_heads; keys / values (H, L, D) (last dim contiguous); bias (1 or batch, L)
    float32 additive mask (0 or -inf); cache_position (1,) the last written index. Returns (H, group, D) in q's dtype.
    """
    if _OPS:
        return _OPS["decode_attention"](q.contiguous(), keys, values, bias, cache_position, scale)
    return _decode_attention(q, keys, values, bias, cache_position, scale)


def prepare_attention(qkv: Any, q_norm: Any, k_norm: Any, cos: Any, sin: Any, cache_position: Any, keys: Any,
                      values: Any, q_heads: int, eps: float) -> Any:
    """RMSNorm of the q and k heads, the rotary embedding, and the cache writes, for one new token per row.

    qkv (B, 1, q_heads + 2 * kv_heads, D) contiguous, the fused projection's output; q_norm / k_norm (D,) the
    norms' weights; cos / sin (B, 1, D) the token's rotary factors; cache_position (1,) the index written;
    keys / values (B, kv_heads, L, D) the layer's static cache, written in place. Returns the rotated queries
    (B * q_heads, D) in qkv's dtype: viewed as (B * kv_heads, group, D), query heads grouped under their K/V head.
    """
    if _OPS:
        return _OPS["prepare_attention"](qkv, q_norm, k_norm, cos, sin, cache_position, keys, values, q_heads, eps)
    return _prepare_attention(qkv, q_norm, k_norm, cos, sin, cache_position, keys, values, q_heads, eps)


def silu_mul(gate_up: Any) -> Any:
    """silu(gate) * up for the fused (..., 2 * width) output of the gate/up projection (gate first)."""
    if _OPS:
        return _OPS["silu_mul"](gate_up)
    return _silu_mul(gate_up)


def rms_norm(x: Any, weight: Any, eps: float) -> Any:
    """RMSNorm over the last dimension of a few rows (one program each), rounded as transformers' Qwen3-VL norm."""
    if _OPS:
        return _OPS["rms_norm"](x, weight, eps)
    return _rms_norm(x, weight, eps)


def _rms_norm(x: Any, weight: Any, eps: float) -> Any:
    import triton

    width = x.shape[-1]
    flat = x.reshape(-1, width)
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    out = x.new_empty(flat.shape)
    block = triton.next_power_of_2(width)
    _kernel()["rms_norm"][(flat.shape[0],)](flat, weight, out, flat.stride(0), out.stride(0), width, eps, BLOCK=block,
                                           num_warps=8 if block >= 2048 else 4)
    return out.view(x.shape)


def _prepare_attention(qkv: Any, q_norm: Any, k_norm: Any, cos: Any, sin: Any, cache_position: Any, keys: Any,
                       values: Any, q_heads: int, eps: float) -> Any:
    batch, tokens, heads, dim = qkv.shape
    kv_heads = keys.shape[1]
    if tokens != 1 or heads != q_heads + 2 * kv_heads or not qkv.is_contiguous():
        raise ValueError(f"prepare_attention takes one contiguous token per row with {q_heads} + 2 x {kv_heads} "
                         f"heads, got {tuple(qkv.shape)}")
    if dim & (dim - 1) or dim < 16:
        raise ValueError("prepare_attention needs a power-of-two head_dim >= 16")
    for cache in (keys, values):
        if cache.stride(-1) != 1 or cache.stride(0) != kv_heads * cache.stride(1):
            raise ValueError("prepare_attention writes a cache laid out (batch, kv_heads, length, head_dim)")
    cos, sin = cos.reshape(batch, dim), sin.reshape(batch, dim)
    if cos.stride(-1) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    q = qkv.new_empty((batch * q_heads, dim))
    _kernel()["prepare_attention"][(batch, heads)](
        qkv, q_norm, k_norm, cos, sin, cache_position, q, keys, values,
        qkv.stride(0), cos.stride(0), keys.stride(1), keys.stride(2), values.stride(1), values.stride(2),
        q_heads, kv_heads, eps,
        D=dim, HALF=dim // 2,
    )
    return q


SILU_BLOCK = 1024


def _silu_mul(gate_up: Any) -> Any:
    import triton

    width = gate_up.shape[-1] // 2
    flat = gate_up.reshape(-1, 2 * width)
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    out = gate_up.new_empty((flat.shape[0], width))
    _kernel()["silu_mul"][(flat.shape[0], triton.cdiv(width, SILU_BLOCK))](
        flat, out, flat.stride(0), out.stride(0), width, BLOCK=SILU_BLOCK)
    return out.view(*gate_up.shape[:-1], width)


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
    kernels = _kernel()
    partial_attention, merge_splits = kernels["partial_attention"], kernels["merge_splits"]
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
