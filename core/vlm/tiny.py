"""A tiny random-weight Qwen3-VL, built locally, for tests, demos and CPU smoke runs.

It has the real architecture (Qwen3VLForConditionalGeneration), a real byte-level BPE tokenizer
with Qwen's special tokens, and the real Qwen3-VL processor classes, saved with
`save_pretrained` so it loads through exactly the path a downloaded model takes. Its answers are
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


def build_tiny_model(folder: str | Path, seed: int = 0, init_std: float = 0.6) -> Path:
    """Build, randomise and save a tiny Qwen3-VL (model + processor) into `folder`.

    `init_std` is large on purpose: with the default 0.02, greedy decoding repeats one token
    and tests that compare outputs pass trivially.
    """
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    processor = build_processor(
        image_size={"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 256},
        video_size={"shortest_edge": 32 * 32 * 2, "longest_edge": 32 * 32 * 2 * 512},
    )
    tokenizer = processor.tokenizer
    ids = special_token_ids(tokenizer)

    vocab = len(tokenizer)
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=4096,
            rope_theta=10000.0,
            rope_scaling={"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": True},
            tie_word_embeddings=True,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=256,
            deepstack_visual_indexes=[0],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, init_std)
            elif "norm" in name:
                param.fill_(1.0)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
