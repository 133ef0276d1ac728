"""Attention for a prefill in chunks, as fast as the one-pass causal kernel.

A prefix prefilled in chunks (part by part while a video is ingested, or to bound activation memory) has each
chunk's queries attend to every key before the chunk and causally to the chunk's own. Through transformers that is
one SDPA call with a mask, which none of the fast kernels takes: on the H200 a 50,000-token prefill in chunks of
8,192 took 4.06 s against 2.28 s in one pass (benchmarks/results/2026-12-02-h200-prefill-paths.txt).

Here a chunk is two calls without a mask instead: the chunk against the keys before it (all visible; the query heads
that share a key head go in as one longer sequence, so no key is copied), and the chunk against itself (causal,
square: both alignments agree). Each returns its log-sum-exp, and the two are merged
exactly (`merge`), as split-KV kernels do. On CUDA the calls are cuDNN's attention (flash where cuDNN refuses);
elsewhere a plain float32 softmax (what the CPU tests use).

`chunked_attention(model)` turns it on for the language model while a prefill runs (the caller holds the model's
lock, so no other forward sees the switch), under the name `vlscope_chunked`: no mask is built for it, and it is
only used for a batch of one prompt without padding, which is what a kept prefix is.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

log = logging.getLogger(__name__)

NAME = "vlscope_chunked"
_kernel: dict[str, str] = {}
"""Per order of kernels, the CUDA call that worked first ("cudnn", "flash" or "math"): tried first after that."""


def _lse_math(q: Any, k: Any, v: Any, causal: bool, scale: float) -> tuple[Any, Any]:
    import torch

    s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if causal:
        n, m = s.shape[-2], s.shape[-1]
        s = s.masked_fill(~torch.ones(n, m, dtype=torch.bool, device=s.device).tril(m - n), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    return torch.matmul(torch.softmax(s, dim=-1), v.float()).to(q.dtype), lse


def attend_lse(q: Any, k: Any, v: Any, causal: bool, scale: float | None = None,
               order: tuple[str, ...] = ("cudnn", "flash", "math")) -> tuple[Any, Any]:
    """(output (B, H, Lq, D) in q's dtype, log-sum-exp (B, H, Lq) in float32) of softmax attention; `k`, `v` have
    as many heads as `q`. `causal` only for Lq == Lk. On CUDA the kernels of `order` are tried in turn (the one that
    worked first for this order, first)."""
    import torch

    scale = float(scale if scale is not None else q.shape[-1] ** -0.5)
    b, h, n = q.shape[0], q.shape[1], q.shape[2]
    if not q.is_cuda:
        return _lse_math(q, k, v, causal, scale)
    memo = "cuda:" + ",".join(order)
    known = _kernel.get(memo)
    for kind in ([known] if known else []) + [k for k in order if k != known]:
        try:
            if kind == "cudnn":
                out = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False,
                                                                         scale=scale)
            elif kind == "flash":
                out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)
            else:
                out = _lse_math(q, k, v, causal, scale)
            _kernel.setdefault(memo, kind)
            return out[0], out[1].float().reshape(b, h, n)
        except (RuntimeError, NotImplementedError) as exc:  # this call's shape, or the machine: the next kernel
            if type(exc).__name__ == "OutOfMemoryError":
                raise
            log.info("chunked attention: %s not usable for %s (%s)", kind, tuple(q.shape),
                     str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
    raise RuntimeError("no attention kernel")  # pragma: no cover - math always works


def merge(o1: Any, l1: Any, o2: Any, l2: Any) -> Any:
    """Two partial attentions over disjoint key sets, each with its log-sum-exp, as one over their union."""
    import torch

    m = torch.maximum(l1, l2)
    w1, w2 = torch.exp(l1 - m)[..., None], torch.exp(l2 - m)[..., None]
    return ((o1.float() * w1 + o2.float() * w2) / (w1 + w2)).to(o1.dtype)


def _heads(x: Any, groups: int) -> Any:
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def attend_chunk(q: Any, k: Any, v: Any, scale: float | None = None) -> Any:
    """Causal attention of a chunk's queries `q` (B, H, c, D) whose keys `k`, `v` (B, Hkv, L, D) end with the
    chunk's own c keys (grouped query heads: H a multiple of Hkv); (B, H, c, D)."""
    c, total = q.shape[2], k.shape[2]
    if total < c:
        raise ValueError(f"{c} queries but only {total} keys")
    groups = q.shape[1] // k.shape[1]
    own_k, own_v = _heads(k[:, :, total - c:], groups), _heads(v[:, :, total - c:], groups)
    out, lse = attend_lse(q, own_k, own_v, True, scale)
    if total == c:
        return out
    before, lse_b = _attend_before(q, k[:, :, :total - c], v[:, :, :total - c], groups, scale)
    return merge(out, lse, before, lse_b)


def _attend_before(q: Any, k: Any, v: Any, groups: int, scale: float | None) -> tuple[Any, Any]:
    """The chunk against every key before it (no mask): the query heads that share a key head are laid one after
    the other along the sequence, so the keys are used as they are (no copy per query head)."""
    b, h, c, d = q.shape
    if groups == 1:
        return attend_lse(q, k, v, False, scale)
    folded = q.reshape(b, h // groups, groups * c, d)
    out, lse = attend_lse(folded, k, v, False, scale)
    return out.reshape(b, h, c, d), lse.reshape(b, h, c)


def chunked_attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                              dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention interface: (B, Lq, H, D) output of `attend_chunk` (one token: plain attention)."""
    if query.shape[0] != 1:
        raise ValueError("chunked attention is for one prompt at a time")
    if query.shape[2] == 1:
        groups = query.shape[1] // key.shape[1]
        out, _ = attend_lse(query, _heads(key, groups), _heads(value, groups), False, scaling)
    else:
        out = attend_chunk(query, key, value, scaling)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, chunked_attention_forward)


@contextlib.contextmanager
def chunked_attention(language_model: Any) -> Iterator[bool]:
    """While it is open, `language_model` attends with `chunked_attention_forward` (yields True), unless its
    attention is one that handles chunks itself (flash_attention_2 and others: yields False, nothing changed).
    Hold the model's lock: the switch is seen by any forward of the model meanwhile."""
    config = getattr(language_model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if before not in ("sdpa", "eager", None) or config is None:
        yield False
        return
    _register()
    config._attn_implementation = NAME
    try:
        yield True
    finally:
        config._attn_implementation = before
