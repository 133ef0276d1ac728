"""The language model's MLP over a long prompt, a stretch of tokens at a time.

A prefill of a video's 46,080 visual tokens in one pass keeps the attention exact and fast (one causal call per
layer, no mask), but each layer's MLP then holds three (tokens x intermediate) activations at once: gate, up and
their product, about 2.9 GB at 50,000 tokens for the 4B shape, the largest transient of the whole first answer.
The MLP acts on each token alone, so running it over stretches of `CHUNK_TOKENS` tokens is the same arithmetic
(the same matmuls, row blocks of them) with that transient bounded to one stretch. Short inputs (decode steps,
ordinary prompts) take the module's own forward. `install(model)` puts it on a loaded Qwen3-VL language model.
"""

from __future__ import annotations

import logging
import types
from typing import Any

log = logging.getLogger(__name__)

CHUNK_TOKENS = 8192
"""Tokens per MLP stretch: big enough that each matmul still runs at full speed on a GPU."""


def _chunked_forward(self: Any, x: Any) -> Any:
    tokens = x.shape[-2] if x.dim() >= 2 else 1
    if tokens <= self._vlscope_chunk or x.dim() != 3:
        return self._vlscope_original_forward(x)
    import torch

    out = torch.empty(x.shape[:-1] + (self.down_proj.out_features,), dtype=x.dtype, device=x.device)
    step = self._vlscope_chunk
    for start in range(0, tokens, step):
        out[:, start:start + step] = self._vlscope_original_forward(x[:, start:start + step])
    return out


def _mlps(model: Any) -> list[Any]:
    core = getattr(model, "model", None)
    lm = getattr(core, "language_model", None)
    layers = getattr(lm, "layers", None) or []
    found = []
    for layer in layers:
        mlp = getattr(layer, "mlp", None)
        if mlp is not None and all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
            found.append(mlp)
    return found


def install(model: Any, chunk_tokens: int | None = None) -> int:
    """Give the language model's dense MLPs the stretch-at-a-time forward for inputs longer than `chunk_tokens`;
    returns how many got it (0: another architecture, e.g. a mixture of experts, keeps its own)."""
    chunk_tokens = CHUNK_TOKENS if chunk_tokens is None else chunk_tokens
    mlps = _mlps(model)
    for mlp in mlps:
        if not hasattr(mlp, "_vlscope_original_forward"):
            mlp._vlscope_original_forward = mlp.forward
        mlp._vlscope_chunk = int(chunk_tokens)
        mlp.forward = types.MethodType(_chunked_forward, mlp)
    if mlps:
        log.debug("language-model MLP in stretches of %d tokens on %d layers", chunk_tokens, len(mlps))
    return len(mlps)
