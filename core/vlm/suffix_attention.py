"""Attention for a question's few tokens after a kept prefix: split over the kept keys, no plan per question.

A follow-up (and the first answer, once the ingest has prefilled the video's prefix) prefills only its own words,
10-40 tokens, against the ~50,000 kept positions of the static cache. Through transformers that is one masked SDPA
call per layer: the keys and values repeated to every query head, a mask over the whole cache, and, on CUDA, cuDNN
building a plan for each new question length. On the H200 that came to about 0.15 s a question
(benchmarks/results/2026-12-04-h200-suffix-attention.txt: one plan ~60 ms, 36 x 1.4 ms of attention, 36 x 1.0 ms of
repeated keys).

Here the queries attend in two parts without a mask. First, the kept keys, which every query sees: the query heads
that share a key head are laid along the sequence, so no key is copied, and the kept keys are cut into equal splits
side by side in the batch, so the few queries keep the whole GPU busy. Second, the question's own keys, causally (a
square). The parts are merged exactly by their log-sum-exp. On CUDA both calls are PyTorch's flash kernel, which
builds no plan per shape (cuDNN's attention where flash refuses); elsewhere the float32 softmax of
`core.vlm.chunk_attention` (what the CPU tests use).

`suffix_attention(model, kept)` turns it on while such a prefill runs (the caller holds the model's lock),
for one prompt without padding, whose first `kept` positions are the kept prefix.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Any, Iterator

from core.vlm.chunk_attention import _heads, attend_lse, merge

NAME = "vlscope_suffix"
SPLIT_KEYS = 1024
"""Kept keys per split, about: 50,000 kept positions become 48 splits side by side."""
ENOUGH_ROWS = 2048
"""Query rows (tokens x query heads per key head) that keep the GPU busy without splits: a long suffix is not split
(its queries copied once per split would cost memory, not time)."""
ORDER = ("flash", "cudnn", "math")
"""Kernels tried on CUDA, in this order: flash builds no plan per shape, so a new question length costs nothing."""
_kept: contextvars.ContextVar[int] = contextvars.ContextVar("vlscope_suffix_kept", default=-1)
log = logging.getLogger(__name__)


def attend_after(q: Any, k: Any, v: Any, kept: int, scale: float | None = None) -> Any:
    """Attention of `q` (1, H, n, D), the n tokens at positions kept..kept+n-1, over keys `k`, `v` (1, Hkv, >= kept+n,
    D) whose first `kept` positions all queries see and whose next n are the queries' own (causal). (1, H, n, D)."""
    b, h, n, d = q.shape
    if b != 1 or k.shape[2] < kept + n:
        raise ValueError(f"suffix attention needs one row and {kept + n} keys (got {b} rows, {k.shape[2]} keys)")
    groups = h // k.shape[1]
    own, own_lse = attend_lse(q, _heads(k[:, :, kept:kept + n], groups), _heads(v[:, :, kept:kept + n], groups), True,
                              scale, ORDER)
    if kept == 0:
        return own
    before, before_lse = _attend_kept(q, k[:, :, :kept], v[:, :, :kept], groups, scale)
    return merge(own, own_lse, before, before_lse)


def _attend_kept(q: Any, k: Any, v: Any, groups: int, scale: float | None) -> tuple[Any, Any]:
    """Every query against the `kept` keys (no mask): (out (1, H, n, D), log-sum-exp (1, H, n)). The query heads of
    a key head go in as one sequence; the keys in equal splits side by side in the batch (views, no copy), the rest
    of them as one more call; the partial results merged by their log-sum-exp."""
    import torch

    _, h, n, d = q.shape
    hkv, kept = k.shape[1], k.shape[2]
    folded = q.reshape(1, hkv, groups * n, d)
    splits = 1 if groups * n >= ENOUGH_ROWS else max(1, kept // SPLIT_KEYS)
    each = kept // splits
    main = splits * each

    def side_by_side(x: Any) -> Any:  # (1, Hkv, main, D) -> (splits, Hkv, each, D), a view of the cache
        return x[:, :, :main].reshape(hkv, splits, each, d).transpose(0, 1)

    outs, lses = attend_lse(folded.expand(splits, -1, -1, -1).contiguous(), side_by_side(k), side_by_side(v), False,
                            scale, ORDER)
    if main < kept:
        rest, rest_lse = attend_lse(folded, k[:, :, main:], v[:, :, main:], False, scale, ORDER)
        outs, lses = torch.cat([outs, rest]), torch.cat([lses, rest_lse])
    top = lses.max(dim=0).values
    weights = torch.exp(lses - top)
    total = weights.sum(dim=0)
    out = ((outs.float() * weights[..., None]).sum(dim=0) / total[..., None]).to(q.dtype)
    lse = top + torch.log(total)
    return out.reshape(1, h, n, d), lse.reshape(1, h, n)


def suffix_attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                             dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention interface: (1, n, H, D) output of `attend_after` over the static cache's keys."""
    kept = _kept.get()
    if kept < 0:
        raise RuntimeError("suffix attention used outside suffix_attention()")
    out = attend_after(query, key, value, kept, scaling)
    return out.transpose(1, 2).contiguous(), None


def _language_model(model: Any) -> Any:
    """The language model of a Qwen3-VL-style `model` (`model.model.language_model`), None when it has none."""
    return getattr(getattr(model, "model", None), "language_model", None)


@contextlib.contextmanager
def suffix_attention(model: Any, kept: int, batch: int = 1) -> Iterator[bool]:
    """While it is open, `model`'s language model attends with `suffix_attention_forward` (yields True) for a prompt
    whose first `kept` positions are in its cache; unchanged (yields False) for a batch of several rows, a model
    without a language model, or an attention other than sdpa/eager. Hold the model's lock: any forward of the
    model meanwhile sees the switch."""
    config = getattr(_language_model(model), "config", None)
    before = getattr(config, "_attn_implementation", None)
    if config is None or batch != 1 or before not in ("sdpa", "eager"):
        yield False
        return
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, suffix_attention_forward)
    token = _kept.set(kept)
    config._attn_implementation = NAME
    try:
        yield True
    finally:
        config._attn_implementation = before
        _kept.reset(token)


def warm(model: Any) -> bool:
    """Run `attend_after` once on a few tokens of `model`'s language-model head shape, on its device and dtype,
    so that the first question of the process does not load the kernels (on the H200 the first call took 0.29 s,
    later ones 1 ms). CUDA only (True when it ran); never fails the caller."""
    import torch

    try:
        language_model = _language_model(model)
        config = language_model.config
        weight = next(language_model.parameters())
        if not weight.is_cuda:
            return False
        heads, kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads)
        dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
        kept, n = 2 * SPLIT_KEYS + 3, 2  # splits and a rest, as a long prefix has
        with torch.inference_mode():
            q = torch.zeros(1, heads, n, dim, device=weight.device, dtype=weight.dtype)
            k = torch.zeros(1, kv_heads, kept + n, dim, device=weight.device, dtype=weight.dtype)
            attend_after(q, k, k, kept)
        return True
    except Exception as exc:  # noqa: BLE001 - a warm-up only: the first question will load them instead
        log.info("suffix attention not warmed: %s", exc)
        return False
