"""Tiny random-weight models of the Qwen vision-language architectures, built locally, for tests, demos and CPU
smoke runs.

Each has the real architecture (`ARCHITECTURES`: Qwen3-VL dense and MoE, Qwen3.5 dense and MoE, the classes
transformers' AutoModelForImageTextToText picks for their config.json), a real byte-level BPE tokenizer with
Qwen's special tokens, and the real processor classes (Qwen3VLProcessor: transformers uses it for Qwen3.5 too),
saved with `save_pretrained` so it loads through exactly the path a downloaded model takes. Its answers are
noise: it proves plumbing, not understanding.

    vlscope dev tiny-model ./tiny-qwen3-vl     # then VLSCOPE_MODEL=./tiny-qwen3-vl
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Qwen's special tokens, in the order of their ids in the real vocabulary.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# A Qwen3-VL style chat template: content lists of image / video / text parts.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] }}\n"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'video' -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "<|im_end|>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}"
)

_CORPUS = [
    "The door opens at 3:15 and a person walks in. The door closes at 3:40.",
    "What happens in this video? A car drives past, then the scene cuts to a kitchen.",
    "Describe the image. A red square on a white background with black text.",
    "<0.5 seconds> <1.5 seconds> <2.5 seconds> <10.0 seconds> <125.0 seconds>",
    "0123456789 : . , ; ! ? ( ) [ ] { } \" ' - + = / * # @ & % $",
    "第3分15秒发生了什么？门在三分钟时关闭。视频的摘要和章节。",
    "請描述這張圖片。日本語のテキストも読めます。",
    '{"start": 12.5, "end": 20.0, "description": "a person opens the door"}',
    "Chapter 1: Introduction. Chapter 2: The experiment. Summary of the whole video.",
    "invoice total subtotal tax date vendor number amount currency USD EUR",
]


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok = Qwen2TokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    """Ids of Qwen's special tokens in `tokenizer`."""
    return {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}


def build_processor(image_size: dict[str, int] | None = None, video_size: dict[str, int] | None = None) -> Any:
    """A real Qwen3VLProcessor over the small BPE tokenizer; sizes default to the hub's Qwen3-VL values."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tokenizer = _tokenizer()
    common = dict(patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    image_processor = Qwen2VLImageProcessor(
        size=image_size or {"shortest_edge": 65536, "longest_edge": 16777216}, **common
    )
    video_processor = Qwen3VLVideoProcessor(
        size=video_size or {"shortest_edge": 4096, "longest_edge": 25165824}, fps=2, min_frames=4, max_frames=768,
        **common,
    )
    return Qwen3VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


ARCHITECTURES = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
"""The `model_type`s a tiny model can be built of (what a released checkpoint's config.json names)."""

# Qwen3.5's hybrid stack in miniature: Gated DeltaNet (linear-attention) layers with a full-attention layer every
# `full_attention_interval` (4 in the released models: 3 linear, 1 full); here 2 linear + 1 full + 1 linear, so a
# prefix cache holds both kinds and the last layer is a recurrent one.
TINY_QWEN3_5_LAYERS = ["linear_attention", "linear_attention", "full_attention", "linear_attention"]


def _tiny_text(arch: str, ids: dict[str, int], vocab: int) -> dict[str, Any]:
    """The text config of the tiny `arch` (a few layers of the real kinds)."""
    common = dict(vocab_size=vocab, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=ids["<|endoftext|>"],
                  eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    if arch in ("qwen3_vl", "qwen3_vl_moe"):
        text = dict(common, intermediate_size=128, num_hidden_layers=2, head_dim=16, rope_theta=10000.0,
                    rope_scaling={"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": True})
        if arch == "qwen3_vl_moe":  # every layer sparse, as Qwen3-VL-30B-A3B (decoder_sparse_step 1)
            text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1,
                        mlp_only_layers=[], norm_topk_prob=True)
        return text
    # Qwen3.5: gated attention with head_dim 32 and a quarter of it rotated (8 dims: M-RoPE sections 2+1+1), as
    # the released 256 x 0.25 = 64 (11+11+10); Gated DeltaNet heads of 16 (released: 16 K / 32 V heads of 128)
    text = dict(common, intermediate_size=128, num_hidden_layers=len(TINY_QWEN3_5_LAYERS),
                layer_types=list(TINY_QWEN3_5_LAYERS), head_dim=32, linear_conv_kernel_dim=4,
                linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                                 "mrope_section": [2, 1, 1], "mrope_interleaved": True})
    if arch == "qwen3_5_moe":  # routed experts + a gated shared expert in every layer, as Qwen3.5-35B-A3B
        text.pop("intermediate_size")
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)
    return text


def _tiny_vision(arch: str) -> dict[str, Any]:
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=256)
    if arch.startswith("qwen3_vl"):
        vision["deepstack_visual_indexes"] = [0]  # Qwen3.5 has no DeepStack
    return vision


def tiny_config(arch: str, tokenizer: Any) -> Any:
    """The transformers config of the tiny `arch` for `tokenizer`'s special token ids."""
    import transformers

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    ids = special_token_ids(tokenizer)
    cls = {"qwen3_vl": "Qwen3VLConfig", "qwen3_vl_moe": "Qwen3VLMoeConfig", "qwen3_5": "Qwen3_5Config",
           "qwen3_5_moe": "Qwen3_5MoeConfig"}[arch]
    return getattr(transformers, cls)(
        text_config=_tiny_text(arch, ids, len(tokenizer)),
        vision_config=_tiny_vision(arch),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_tiny_model(folder: str | Path, seed: int = 0, init_std: float = 0.6, arch: str = "qwen3_vl") -> Path:
    """Build, randomise and save a tiny model of `arch` (model + processor) into `folder`.

    `arch` is one of ARCHITECTURES (default Qwen3-VL dense). `init_std` is large on purpose: with the default 0.02,
    greedy decoding repeats one token and tests that compare outputs pass trivially.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    processor = build_processor(
        image_size={"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 256},
        video_size={"shortest_edge": 32 * 32 * 2, "longest_edge": 32 * 32 * 2 * 512},
    )
    tokenizer = processor.tokenizer
    ids = special_token_ids(tokenizer)
    config = tiny_config(arch, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    with torch.no_grad():
        if arch == "qwen3_vl":  # as the tiny Qwen3-VL has always been built (the tests' reference outputs)
            for name, param in model.named_parameters():
                if param.dim() >= 2:
                    param.normal_(0.0, init_std)
                elif "norm" in name:
                    param.fill_(1.0)
        else:
            for param in model.parameters():
                if param.dim() >= 2:
                    param.normal_(0.0, init_std)
            for module in model.modules():  # norms as trained models start them: unit scale, no shift
                weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
                if "Norm" not in type(module).__name__ or weight is None or weight.dim() != 1:
                    continue
                # Qwen3.5's RMSNorm scales by (1 + weight): its unit scale is a weight of 0 (the DeltaNet's gated norm
                # and the vision tower's LayerNorms are plain)
                weight.fill_(0.0 if type(module).__name__ in ("Qwen3_5RMSNorm", "Qwen3_5MoeRMSNorm") else 1.0)
                if bias is not None:
                    bias.zero_()
            for module in model.modules():
                if hasattr(module, "A_log") and hasattr(module, "in_proj_a"):
                    # a Gated DeltaNet layer: slow decay (A in [0.001, 0.1], small decay inputs), so its recurrent
                    # state carries the prompt (with the released init it forgets all but the last few tokens and
                    # every question gets the same answer: comparisons between paths would pass trivially)
                    module.A_log.copy_(torch.empty_like(module.A_log).uniform_(0.001, 0.1).log())
                    module.in_proj_a.weight.normal_(0.0, 0.05)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
