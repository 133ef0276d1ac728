"""Shapes of the released Qwen3-VL and Qwen3.5 checkpoints (their config.json values), and what they cost.

Used to build random-weight models of the exact architecture for speed and memory benchmarks (no download needed)
and by the planner (core.media.budget) to estimate memory: parameters (a mixture of experts keeps every expert's
weights resident; a token reads only its top-k: `ParamCount.active`), KV-cache bytes per token (full-attention
layers only: one in four in Qwen3.5) and the fixed recurrent + convolution state of Qwen3.5's Gated DeltaNet layers.

The first part (`qwen3_vl_config_dict`, `SIZES` "2b" / "4b" / "8b") is the original Qwen3-VL Instruct table; `SHAPES`
holds every known size of both families, keyed like "qwen3-vl-30b-a3b" or "qwen3.5-9b" (`shape_key` reads model
names: "Qwen/Qwen3.5-9B", "Qwen3-VL-8B-Thinking-FP8"; a Thinking or FP8 checkpoint has its Instruct model's shape).
Where each number came from is in `Shape.source`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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


# ------------------------------------------------------------------------------------------------ every known size
@dataclass(frozen=True)
class Shape:
    """One released model's architecture: its config.json's text and vision parts, and where they were read."""

    key: str
    """"qwen3-vl-4b", "qwen3.5-9b", ... (the planner's model size for it)."""
    name: str
    """The hub name without organisation and suffix: "Qwen3-VL-30B-A3B", "Qwen3.5-9B"."""
    model_type: str
    text: dict[str, Any]
    vision: dict[str, Any]
    tie_word_embeddings: bool
    source: str


_QWEN3_VL_SOURCE = ("Qwen/Qwen3-VL-{size}-Instruct config.json (2B/4B/8B: this table since the first benchmark; 32B "
                    "and 30B-A3B: copies of the released config.json in public code found with the search tool, "
                    "2026-12-02)")
_QWEN3_5_SOURCE = ("Qwen/Qwen3.5-{size} config.json as copied in public code and model cards found with the search "
                   "tool, 2026-12-02 (several independent copies agree; Qwen3.5 names: 24/8 Gated DeltaNet/full layers "
                   "for 32 layers, head_dim 256, a quarter rotated, vocab 248,320)")

_VL_VISION_SMALL = dict(depth=24, hidden_size=1024, intermediate_size=4096, deepstack_visual_indexes=[5, 11, 17])
_VL_VISION_LARGE = dict(depth=27, hidden_size=1152, intermediate_size=4304, deepstack_visual_indexes=[8, 16, 24])
_VL_TEXT = dict(num_key_value_heads=8, head_dim=128, vocab_size=151936, rope_theta=5000000,
                rope_scaling={"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"})


def _vl(size: str, text: dict[str, Any], vision: dict[str, Any], tie: bool, model_type: str = "qwen3_vl") -> Shape:
    return Shape(f"qwen3-vl-{size.lower()}", f"Qwen3-VL-{size}", model_type, dict(_VL_TEXT, **text),
                 dict(vision, out_hidden_size=text["hidden_size"]), tie, _QWEN3_VL_SOURCE.format(size=size))


_Q35_TEXT = dict(head_dim=256, vocab_size=248320, linear_conv_kernel_dim=4, linear_key_head_dim=128,
                 linear_value_head_dim=128, linear_num_key_heads=16, full_attention_interval=4,
                 rope_parameters={"mrope_interleaved": True, "mrope_section": [11, 11, 10], "rope_type": "default",
                                  "rope_theta": 10000000, "partial_rotary_factor": 0.25})
_Q35_VISION_SMALL = dict(depth=12, hidden_size=768, intermediate_size=3072, num_heads=12)
_Q35_VISION_MEDIUM = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16)
_Q35_VISION_LARGE = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16)


def _q35(size: str, text: dict[str, Any], vision: dict[str, Any], tie: bool, model_type: str = "qwen3_5") -> Shape:
    return Shape(f"qwen3.5-{size.lower()}", f"Qwen3.5-{size}", model_type, dict(_Q35_TEXT, **text),
                 dict(vision, out_hidden_size=text["hidden_size"]), tie, _QWEN3_5_SOURCE.format(size=size))


SHAPES: dict[str, Shape] = {s.key: s for s in (
    _vl("2B", dict(_TEXT["2b"], num_attention_heads=16), _VL_VISION_SMALL, True),
    _vl("4B", dict(_TEXT["4b"], num_attention_heads=32), _VL_VISION_SMALL, True),
    _vl("8B", dict(_TEXT["8b"], num_attention_heads=32), _VL_VISION_LARGE, False),
    _vl("32B", dict(hidden_size=5120, num_hidden_layers=64, intermediate_size=25600, num_attention_heads=64),
        _VL_VISION_LARGE, False),
    _vl("30B-A3B", dict(hidden_size=2048, num_hidden_layers=48, intermediate_size=6144, num_attention_heads=32,
                        num_key_value_heads=4, num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768,
                        decoder_sparse_step=1, mlp_only_layers=[], norm_topk_prob=True),
        _VL_VISION_LARGE, False, "qwen3_vl_moe"),
    _q35("0.8B", dict(hidden_size=1024, num_hidden_layers=24, intermediate_size=3584, num_attention_heads=8,
                      num_key_value_heads=2, linear_num_value_heads=16), _Q35_VISION_SMALL, True),
    _q35("2B", dict(hidden_size=2048, num_hidden_layers=24, intermediate_size=6144, num_attention_heads=8,
                    num_key_value_heads=2, linear_num_value_heads=16), _Q35_VISION_MEDIUM, True),
    _q35("4B", dict(hidden_size=2560, num_hidden_layers=32, intermediate_size=9216, num_attention_heads=16,
                    num_key_value_heads=4, linear_num_value_heads=32), _Q35_VISION_MEDIUM, True),
    _q35("9B", dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=12288, num_attention_heads=16,
                    num_key_value_heads=4, linear_num_value_heads=32), _Q35_VISION_LARGE, False),
    _q35("27B", dict(hidden_size=5120, num_hidden_layers=64, intermediate_size=17408, num_attention_heads=24,
                     num_key_value_heads=4, linear_num_value_heads=48), _Q35_VISION_LARGE, False),
    _q35("35B-A3B", dict(hidden_size=2048, num_hidden_layers=40, num_attention_heads=16, num_key_value_heads=2,
                         linear_num_value_heads=32, num_experts=256, num_experts_per_tok=8, moe_intermediate_size=512,
                         shared_expert_intermediate_size=512), _Q35_VISION_LARGE, False, "qwen3_5_moe"),
)}
"""Every known released shape. Not here (no copy of their config.json checked): Qwen3-VL-235B-A22B, Qwen3.5-122B-A10B
and Qwen3.5-397B-A17B; their folders are still planned from their own config.json (`core.media.budget`)."""

_ALIASES = {"2b": "qwen3-vl-2b", "4b": "qwen3-vl-4b", "8b": "qwen3-vl-8b"}  # the original planner sizes
_SUFFIX = re.compile(r"[-_](instruct|thinking|base|fp8|awq|gptq|int4|int8|bnb|4bit|8bit)$", re.IGNORECASE)


def shape_key(name: str) -> str | None:
    """The SHAPES key of a model name or size ("Qwen/Qwen3.5-9B", "Qwen3-VL-8B-Thinking-FP8", "qwen3.5-4b", "4b"
    (Qwen3-VL)), or None when it names no known shape. Thinking and quantised checkpoints have their model's shape."""
    text = name.strip().rstrip("/").split("/")[-1].lower().replace("_", "-")
    while _SUFFIX.search(text):
        text = _SUFFIX.sub("", text)
    if text in _ALIASES:
        return _ALIASES[text]
    if text in SHAPES:
        return text
    for key, shape in SHAPES.items():
        if text == shape.name.lower():
            return key
    return None


def config_kwargs(key: str, token_ids: dict[str, int] | None = None, vocab_size: int | None = None) -> dict[str, Any]:
    """The config class keyword arguments of shape `key` (see `config_class`), with the special token ids of
    `token_ids` ("image", "video", "vision_start", "vision_end", "eos", "pad") and `vocab_size` when given (for a
    processor whose tokenizer numbers them differently)."""
    shape = SHAPES[shape_key(key) or key]
    qwen3_5 = shape.model_type.startswith("qwen3_5")
    ids = ({"image": 248056, "video": 248057, "vision_start": 248053, "vision_end": 248054, "eos": 248046,
            "pad": 248044} if qwen3_5 else
           {"image": 151655, "video": 151656, "vision_start": 151652, "vision_end": 151653, "eos": 151645,
            "pad": 151643})
    ids.update(token_ids or {})
    text = dict(shape.text, hidden_act="silu", max_position_embeddings=262144, rms_norm_eps=1e-6, attention_bias=False,
                tie_word_embeddings=shape.tie_word_embeddings, eos_token_id=ids["eos"],
                **({"pad_token_id": ids["pad"]} if qwen3_5 else {"bos_token_id": ids["pad"]}))
    if vocab_size is not None:
        text["vocab_size"] = vocab_size
    vision = dict(shape.vision, hidden_act="gelu_pytorch_tanh", in_channels=3, num_position_embeddings=2304,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2)
    vision.setdefault("num_heads", 16)
    return dict(text_config=text, vision_config=vision, image_token_id=ids["image"], video_token_id=ids["video"],
                vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"],
                tie_word_embeddings=shape.tie_word_embeddings)


def config_class(key: str) -> Any:
    """The transformers config class of shape `key` (Qwen3VLConfig, Qwen3VLMoeConfig, Qwen3_5Config,
    Qwen3_5MoeConfig)."""
    import transformers

    model_type = SHAPES[shape_key(key) or key].model_type
    return getattr(transformers, {"qwen3_vl": "Qwen3VLConfig", "qwen3_vl_moe": "Qwen3VLMoeConfig",
                                  "qwen3_5": "Qwen3_5Config", "qwen3_5_moe": "Qwen3_5MoeConfig"}[model_type])


def build_config(key: str, token_ids: dict[str, int] | None = None, vocab_size: int | None = None) -> Any:
    """The transformers config of shape `key` (random weights of it: `AutoModelForImageTextToText.from_config`)."""
    return config_class(key)(**config_kwargs(key, token_ids, vocab_size))


# ------------------------------------------------------------------------------------------------ what a shape costs
def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


@dataclass(frozen=True)
class ParamCount:
    """Parameters of a model (the loaded model's own count: MTP heads that transformers does not load are not in)."""

    total: int
    vision: int
    embedding: int
    """The input embedding (vocabulary x hidden); the output head is as large again unless tied."""
    active: int
    """Language-model parameters one decoded token reads (embedding row aside): all of them for a dense model; for
    a mixture of experts only the router's top-k experts (+ the shared one). The decode speed's memory-bound limit."""
    experts: int
    """Routed experts' parameters, all resident (0 for a dense model)."""


def _text_of(config: Any) -> Any:
    return _get(config, "text_config", None) or config


def layer_types(config: Any) -> list[str]:
    """Each language layer's kind: "full_attention" (a KV cache per token) or "linear_attention" (Gated DeltaNet)."""
    text = _text_of(config)
    layers = int(_get(text, "num_hidden_layers"))
    types = list(_get(text, "layer_types", None) or [])
    if str(_get(config, "model_type", "") or "").startswith("qwen3_5") and not types:
        interval = int(_get(text, "full_attention_interval", 4) or 4)
        types = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(layers)]
    return types or ["full_attention"] * layers


def count_params(config: Any) -> ParamCount:
    """The exact parameter count of a Qwen3-VL / Qwen3-VL MoE / Qwen3.5 / Qwen3.5 MoE config (an object or the dict
    of a config.json), as transformers builds the model (tests check it against a model built on the meta device)."""
    model_type = str(_get(config, "model_type", "") or "")
    t, v = _text_of(config), _get(config, "vision_config")
    h, vocab = int(_get(t, "hidden_size")), int(_get(t, "vocab_size", 151936))
    heads, kv = int(_get(t, "num_attention_heads")), int(_get(t, "num_key_value_heads"))
    hd = int(_get(t, "head_dim", None) or h // heads)
    qwen3_5 = model_type.startswith("qwen3_5")
    experts = int(_get(t, "num_experts", 0) or 0) if model_type.endswith("_moe") else 0
    top_k = int(_get(t, "num_experts_per_tok", 0) or 0)
    # attention (Qwen3.5's q_proj also makes the output gate: 2x), q/k norms over head_dim
    full = h * heads * hd * (2 if qwen3_5 else 1) + 2 * h * kv * hd + heads * hd * h + 2 * hd
    linear = 0
    if qwen3_5:
        kh, kd = int(_get(t, "linear_num_key_heads")), int(_get(t, "linear_key_head_dim"))
        vh, vd = int(_get(t, "linear_num_value_heads")), int(_get(t, "linear_value_head_dim"))
        conv = 2 * kh * kd + vh * vd
        linear = (h * conv + h * vh * vd + 2 * h * vh + conv * int(_get(t, "linear_conv_kernel_dim", 4)) + 2 * vh
                  + vd + vh * vd * h)
    routed = shared = dense = 0
    if experts:
        mi = int(_get(t, "moe_intermediate_size"))
        routed = experts * 3 * h * mi
        shared_i = int(_get(t, "shared_expert_intermediate_size", 0) or 0) if qwen3_5 else 0
        shared = 3 * h * shared_i + (h if shared_i else 0)
        mlp = experts * h + routed + shared  # router + experts + shared expert and its gate
        mlp_active = experts * h + top_k * 3 * h * mi + shared
    else:
        dense = 3 * h * int(_get(t, "intermediate_size"))
        mlp = mlp_active = dense
    types = layer_types(config)
    n_full = sum(x == "full_attention" for x in types)
    n_linear = len(types) - n_full
    sparse = len(types)
    if experts and not qwen3_5:  # Qwen3-VL MoE: dense MLP on `mlp_only_layers` and off the sparse step
        step, only = int(_get(t, "decoder_sparse_step", 1) or 1), set(_get(t, "mlp_only_layers", None) or [])
        sparse = sum(1 for i in range(len(types)) if i not in only and (i + 1) % step == 0)
    dense_layers = len(types) - sparse
    dense_mlp = 3 * h * int(_get(t, "intermediate_size", 0) or 0)
    norms = 2 * h
    body = n_full * full + n_linear * linear + len(types) * norms
    tie = bool(_get(config, "tie_word_embeddings", _get(t, "tie_word_embeddings", False)))
    embedding = vocab * h
    text_total = embedding * (1 if tie else 2) + body + sparse * mlp + dense_layers * dense_mlp + h
    text_active = body + sparse * mlp_active + dense_layers * dense_mlp + h + embedding  # + the output head
    # vision tower: patch embedding (Conv3d with bias), learned positions, blocks, merger (+ DeepStack mergers)
    vh_, depth, vi, vo = (int(_get(v, "hidden_size")), int(_get(v, "depth")), int(_get(v, "intermediate_size")),
                          int(_get(v, "out_hidden_size")))
    ps, tp, merge = int(_get(v, "patch_size", 16)), int(_get(v, "temporal_patch_size", 2)), int(_get(v, "spatial_merge_size", 2))
    merged = vh_ * merge * merge
    block = 4 * vh_ * vh_ + 9 * vh_ + 2 * vh_ * vi + vi
    head = merged * merged + merged + merged * vo + vo

    deep = 0 if qwen3_5 else len(_get(v, "deepstack_visual_indexes", None) or [])
    vision = (3 * tp * ps * ps * vh_ + vh_ + int(_get(v, "num_position_embeddings", 2304)) * vh_ + depth * block
              + head + 2 * vh_ + deep * (head + 2 * merged))
    return ParamCount(total=text_total + vision, vision=vision, embedding=embedding, active=text_active,
                      experts=sparse * routed)


def kv_bytes_per_token_of(config: Any, bytes_per_value: int = 2) -> int:
    """KV-cache bytes one token costs: 2 (K, V) x full-attention layers x kv heads x head_dim x value size (Qwen3.5's
    Gated DeltaNet layers keep no per-token cache)."""
    t = _text_of(config)
    heads = int(_get(t, "num_attention_heads"))
    hd = int(_get(t, "head_dim", None) or int(_get(t, "hidden_size")) // heads)
    full = sum(x == "full_attention" for x in layer_types(config))
    return 2 * full * int(_get(t, "num_key_value_heads")) * hd * bytes_per_value


def state_bytes_of(config: Any, bytes_per_value: int = 2) -> int:
    """Bytes of the fixed state one sequence keeps in Qwen3.5's Gated DeltaNet layers, whatever its length: per
    layer the recurrent state (value heads x key dim x value dim, float32 as transformers keeps it) and the
    convolution state (conv channels x kernel, in the model's precision); 0 for a model without such layers."""
    t = _text_of(config)
    n = sum(x == "linear_attention" for x in layer_types(config))
    if not n:
        return 0
    kh, kd = int(_get(t, "linear_num_key_heads")), int(_get(t, "linear_key_head_dim"))
    vh, vd = int(_get(t, "linear_num_value_heads")), int(_get(t, "linear_value_head_dim"))
    conv = (2 * kh * kd + vh * vd) * int(_get(t, "linear_conv_kernel_dim", 4)) * bytes_per_value
    return n * (vh * kd * vd * 4 + conv)


def planner_entry(config: Any) -> dict[str, Any]:
    """The planner's numbers for a config (`core.media.budget.MODEL_PARAMS` entries): parameters, hidden sizes,
    layers, the KV-cache and recurrent-state shapes, DeepStack levels and the architecture."""
    count = count_params(config)
    t, v = _text_of(config), _get(config, "vision_config")
    heads = int(_get(t, "num_attention_heads"))
    h = int(_get(t, "hidden_size"))
    model_type = str(_get(config, "model_type", "") or "")
    types = layer_types(config)
    return dict(params=float(count.total), vision=float(count.vision), hidden=h, vision_hidden=int(_get(v, "hidden_size")),
                layers=len(types), vocab_hidden=count.embedding, kv_heads=int(_get(t, "num_key_value_heads")),
                head_dim=int(_get(t, "head_dim", None) or h // heads),
                kv_layers=sum(x == "full_attention" for x in types),
                state_bytes_bf16=state_bytes_of(config, 2), state_bytes_fp32=state_bytes_of(config, 4),
                deepstack=0 if model_type.startswith("qwen3_5") else len(_get(v, "deepstack_visual_indexes", None) or []),
                active=float(count.active), arch=model_type)


def shape_entry(key: str) -> dict[str, Any]:
    """`planner_entry` of the known shape `key`."""
    shape = SHAPES[shape_key(key) or key]
    return planner_entry(dict(config_kwargs(shape.key), model_type=shape.model_type))
