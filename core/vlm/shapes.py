"""Shapes of the released Qwen3-VL Instruct checkpoints (their config.json values).

Used to build random-weight models of the exact architecture for speed and memory benchmarks
(no download needed) and to estimate memory.
"""

from __future__ import annotations

from typing import Any

_TEXT = {
    "2b": dict(hidden_size=2048, num_hidden_layers=28, intermediate_size=6144, tie_word_embeddings=True),
    "4b": dict(hidden_size=2560, num_hidden_layers=36, intermediate_size=9728, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, num_hidden_layers=36, intermediate_size=12288, tie_word_embeddings=False),
}
_HEADS = {"2b": 16, "4b": 32, "8b": 32}
_VISION = {
    "2b": dict(depth=24, hidden_size=1024, intermediate_size=4096, out_hidden_size=2048, deepstack_visual_indexes=[5, 11, 17]),
    "4b": dict(depth=24, hidden_size=1024, intermediate_size=4096, out_hidden_size=2560, deepstack_visual_indexes=[5, 11, 17]),
    "8b": dict(depth=27, hidden_size=1152, intermediate_size=4304, out_hidden_size=4096, deepstack_visual_indexes=[8, 16, 24]),
}
SIZES = tuple(_TEXT)


def kv_bytes_per_token(size: str, bytes_per_value: int = 2) -> int:
    """KV-cache bytes one token costs: 2 (K and V) x layers x kv heads (8) x head_dim (128) x value size."""
    layers = _TEXT[size]["num_hidden_layers"]
    return 2 * layers * 8 * 128 * bytes_per_value


def qwen3_vl_config_dict(size: str, token_ids: dict[str, int] | None = None, vocab_size: int = 151936) -> dict[str, Any]:
    """The Qwen3VLConfig keyword arguments of the released `size` ("2b", "4b", "8b") Instruct model.

    `token_ids` overrides the special token ids (for a processor whose tokenizer numbers them differently).
    """
    if size not in _TEXT:
        raise ValueError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    ids = {"image": 151655, "video": 151656, "vision_start": 151652, "vision_end": 151653, "eos": 151645, "pad": 151643}
    if token_ids:
        ids.update(token_ids)
    text = dict(
        _TEXT[size],
        vocab_size=vocab_size,
        num_attention_heads=_HEADS[size],
        num_key_value_heads=8,
        head_dim=128,
        hidden_act="silu",
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        rope_theta=5000000,
        rope_scaling={"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
        attention_bias=False,
        bos_token_id=ids["pad"],
        eos_token_id=ids["eos"],
    )
    vision = dict(
        _VISION[size],
        hidden_act="gelu_pytorch_tanh",
        in_channels=3,
        num_heads=16,
        num_position_embeddings=2304,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    return dict(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=_TEXT[size]["tie_word_embeddings"],
    )
