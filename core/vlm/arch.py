"""What architecture a loaded (or configured) model is, and what that means for the engine.

VLScope runs four Qwen vision-language architectures through one engine, all loaded by
`AutoModelForImageTextToText` with the same processor class (`Qwen3VLProcessor`, which writes the same `<t seconds>`
text timestamps before each pair of video frames for all of them):

- `qwen3_vl`: Qwen3-VL dense (2B, 4B, 8B, 32B; the Instruct and Thinking checkpoints of a size are one shape);
- `qwen3_vl_moe`: Qwen3-VL mixture of experts (30B-A3B, 235B-A22B): every expert's weights are resident, a token
  reads only the router's top-k;
- `qwen3_5`: Qwen3.5 dense (0.8B ... 27B): Gated DeltaNet (linear-attention) layers with a gated full-attention layer
  every 4th; the linear layers keep a fixed-size recurrent + convolution state, not a per-token KV cache;
- `qwen3_5_moe`: Qwen3.5 mixture of experts (35B-A3B ...): the same hybrid stack with routed + shared experts.

`decode_path_reason` says why the fast decoder (static KV cache + lean step + CUDA graph, `core.vlm.fastdecode`)
cannot run a model (None when it can): its static cache and lean step hold per-token K/V only, so Qwen3.5 answers
through transformers' own `generate` (which keeps the recurrent state in its hybrid cache). Kept prefixes work for
every architecture: a Qwen3.5 prefix keeps its layers' recurrent and convolution states beside the K/V of its
full-attention layers (`core.vlm.prefix`), and is reused on the plain path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KNOWN = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
FAMILY = {"qwen3_vl": "Qwen3-VL", "qwen3_vl_moe": "Qwen3-VL", "qwen3_5": "Qwen3.5", "qwen3_5_moe": "Qwen3.5"}


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


@dataclass(frozen=True)
class Architecture:
    """The facts about a model's architecture that the engine and the planner act on."""

    model_type: str
    """The config's `model_type` ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe", or another)."""
    layers: int = 0
    full_attention_layers: int = 0
    """Layers with a per-token KV cache (all of them in Qwen3-VL; one in four in Qwen3.5)."""
    linear_attention_layers: int = 0
    """Gated DeltaNet layers (Qwen3.5): a fixed recurrent + convolution state each, whatever the prompt length."""
    experts: int = 0
    experts_per_token: int = 0
    shared_expert: bool = False
    deepstack: bool = False
    """The vision tower feeds DeepStack features into the first language layers (Qwen3-VL; not Qwen3.5)."""

    @property
    def known(self) -> bool:
        return self.model_type in KNOWN

    @property
    def family(self) -> str:
        return FAMILY.get(self.model_type, self.model_type or "unknown")

    @property
    def moe(self) -> bool:
        return self.experts > 0

    @property
    def hybrid(self) -> bool:
        """Linear-attention layers beside the full-attention ones (a recurrent state to keep, not only K/V)."""
        return self.linear_attention_layers > 0

    def describe(self) -> str:
        """For people: 'Qwen3.5 MoE: 30 Gated DeltaNet + 10 full-attention layers, 256 experts (8 + 1 shared per
        token)'."""
        text = self.family + (" MoE" if self.moe else "")
        if not self.known:
            return f"{text} (not a Qwen3-VL or Qwen3.5 architecture)"
        if self.hybrid:
            text += (f": {self.linear_attention_layers} Gated DeltaNet + {self.full_attention_layers} full-attention "
                     "layers")
        else:
            text += f": {self.layers} layers"
        if self.moe:
            text += (f", {self.experts} experts ({self.experts_per_token}"
                     + (" + 1 shared" if self.shared_expert else "") + " per token)")
        return text


def architecture_of(model_or_config: Any) -> Architecture:
    """The Architecture of a loaded model, its config, or the dict of a config.json."""
    config = _get(model_or_config, "config", None)
    if config is None or isinstance(model_or_config, dict):
        config = model_or_config
    model_type = str(_get(config, "model_type", "") or "")
    text = _get(config, "text_config", None) or config
    layers = int(_get(text, "num_hidden_layers", 0) or 0)
    types = list(_get(text, "layer_types", None) or [])
    if model_type.startswith("qwen3_5") and not types and layers:
        interval = int(_get(text, "full_attention_interval", 4) or 4)  # as Qwen3_5TextConfig fills it in
        types = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(layers)]
    linear = sum(t == "linear_attention" for t in types)
    experts = int(_get(text, "num_experts", 0) or 0)
    vision = _get(config, "vision_config", None)
    deep = bool(_get(vision, "deepstack_visual_indexes", None) or []) if vision is not None else False
    return Architecture(
        model_type=model_type, layers=layers, full_attention_layers=layers - linear, linear_attention_layers=linear,
        experts=experts, experts_per_token=int(_get(text, "num_experts_per_tok", 0) or 0) if experts else 0,
        shared_expert=bool(experts and (_get(text, "shared_expert_intermediate_size", 0) or 0)),
        deepstack=deep and model_type.startswith("qwen3_vl"))


def decode_path_reason(model: Any) -> str | None:
    """Why the fast decoder cannot decode `model` (None when it can): then requests use transformers' `generate`."""
    arch = architecture_of(model)
    if arch.hybrid:
        return (f"{arch.family}'s Gated DeltaNet layers keep a recurrent state that the fast decoder's static KV "
                "cache and lean step do not hold")
    if not arch.known:
        return f"the fast decoder is written for Qwen3-VL; this model is {arch.model_type or 'of an unknown type'}"
    return None


def think_end_id(tokenizer: Any) -> int | None:
    """The id of `</think>` in a thinking model's tokenizer (Qwen3-VL-*-Thinking and Qwen3.5 have it: their answers
    follow their reasoning after it), or None."""
    try:
        return int(tokenizer.get_vocab()["</think>"])
    except (KeyError, AttributeError, TypeError):
        return None
