"""The vision tower's attention over equal blocks in one call.

Qwen3-VL's vision tower attends within each temporal group (two frames) only: `cu_seqlens` marks the groups. With
`sdpa`, transformers splits the sequence at every boundary and calls attention once per group, so a 32-group
part of a video is 32 small calls per layer (and a host sync per layer for the lengths). A video's groups are all
of one size: here they are one batch, (groups, heads, tokens, dim), in one SDPA call, which is the same
arithmetic (each row attends to its own group). Groups of several sizes (images of different sizes in one
request) keep transformers' path. `install(model)` puts it on a loaded model's vision attention modules.
"""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

log = logging.getLogger(__name__)


class _Blocks:
    """The block length of the last `cu_seqlens` seen (one per vision forward, shared by its layers)."""

    def __init__(self) -> None:
        self.cu: Any = None
        self.block: int | None = None

    def of(self, cu: Any, total: int) -> int | None:
        if cu is not self.cu:
            lengths = (cu[1:] - cu[:-1]).tolist()
            block = lengths[0] if lengths and all(n == lengths[0] for n in lengths) else None
            self.cu, self.block = cu, block if block and block * len(lengths) == total else None
        return self.block


VISION_ATTENTION = ("Qwen3VLVisionAttention", "Qwen3VLMoeVisionAttention", "Qwen3_5VisionAttention",
                    "Qwen3_5MoeVisionAttention")
"""The vision attention modules of the four architectures (one code in transformers: qkv, rotary, proj)."""


def install(model: Any) -> int:
    """Give the model's Qwen3-VL vision attention modules the one-call path; returns how many got it (0: another
    model, or an attention implementation other than sdpa, which keep their own)."""
    visual = getattr(getattr(model, "model", None), "visual", None)
    if visual is None or getattr(visual.config, "_attn_implementation", None) != "sdpa":
        return 0
    blocks = _Blocks()
    count = 0
    for module in visual.modules():
        if type(module).__name__ not in VISION_ATTENTION or not hasattr(module, "qkv"):
            continue
        rotate = getattr(sys.modules[type(module).__module__], "apply_rotary_pos_emb_vision", None)
        if rotate is None:
            continue
        module._vlscope_original_forward = module.forward
        module.forward = types.MethodType(_forward(blocks, rotate), module)
        count += 1
    if count:
        log.info("vision attention: equal groups in one SDPA call (%d layers)", count)
    return count


def _forward(blocks: _Blocks, rotate: Any) -> Any:
    def forward(self: Any, hidden_states: Any, cu_seqlens: Any, position_embeddings: Any = None, **kwargs: Any) -> Any:
        import torch.nn.functional as F

        seq = hidden_states.shape[0]
        block = blocks.of(cu_seqlens, seq) if position_embeddings is not None and not kwargs.get("rotary_pos_emb") else None
        if block is None:
            return self._vlscope_original_forward(hidden_states, cu_seqlens, position_embeddings=position_embeddings,
                                                  **kwargs)
        q, k, v = self.qkv(hidden_states).reshape(seq, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = position_embeddings
        q, k = rotate(q, k, cos, sin)
        groups = seq // block

        def batched(x: Any) -> Any:  # (seq, heads, dim) -> (groups, heads, block, dim)
            return x.reshape(groups, block, self.num_heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(batched(q), batched(k), batched(v.to(q.dtype)), scale=self.scaling)
        return self.proj(out.transpose(1, 2).reshape(seq, -1))

    return forward
