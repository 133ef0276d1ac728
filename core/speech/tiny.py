"""A tiny random-weight Whisper, built locally (no download), for tests and CPU smoke runs, and random weights of
any Whisper shape for benchmarks.

It is the real architecture (`WhisperForConditionalGeneration`), a real Whisper tokenizer (`WhisperTokenizer`
over a byte-level BPE trained here on a few sentences, with Whisper's special tokens in Whisper's order: end of
text, start of transcript, the 100 language tokens, translate, transcribe, start of LM, start of previous, no
speech, no timestamps, then the 1501 timestamp tokens <|0.00|>..<|30.00|>), the real feature extractor (128 mel
bins, as large-v3) and a generation config with the language, task and timestamp ids and alignment heads, all
saved with `save_pretrained` so it loads through exactly the path a downloaded checkpoint takes. Its transcripts
are noise: it proves plumbing, not hearing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_CORPUS = [
    "The meeting starts at nine in the morning. We will talk about the budget for next year.",
    "Please send the report to the team before Friday. Thank you all for coming.",
    "What did she say about the budget? The weather today is sunny and warm.",
    "Bonjour à tous. Guten Tag. Hola, ¿qué tal? 你好，世界。今日は良い天気です。",
    "0123456789 , . ? ! ' - : ; ( ) %",
]

# large-v3-turbo's published shape (config.json of openai/whisper-large-v3-turbo)
LARGE_V3_TURBO = dict(d_model=1280, encoder_layers=32, decoder_layers=4, encoder_attention_heads=20,
                      decoder_attention_heads=20, encoder_ffn_dim=5120, decoder_ffn_dim=5120, num_mel_bins=128,
                      max_source_positions=1500, max_target_positions=448)
LARGE_V3_TURBO_VOCAB = 51866
TINY = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=128, max_source_positions=1500,
            max_target_positions=448)


def build_tokenizer(bpe_vocab_size: int = 400, pad_to: int | None = None) -> Any:
    """A WhisperTokenizer with Whisper's special and timestamp tokens over a small byte-level BPE. `pad_to`: fill the
    BPE vocabulary with unused tokens up to this size (50257: large-v3's layout, 51866 tokens in all)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AddedToken, WhisperTokenizer
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=bpe_vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    data = json.loads(bpe.to_str())
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
    vocab = dict(data["model"]["vocab"])
    for i in range(len(vocab), pad_to or 0):
        vocab[f"<unused{i}>"] = i
    tok = WhisperTokenizer(vocab=vocab, merges=merges)  # adds <|endoftext|> after the BPE
    specials = ["<|startoftranscript|>", *[f"<|{code}|>" for code in LANGUAGES], "<|translate|>", "<|transcribe|>",
                "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    tok.add_special_tokens({"additional_special_tokens": [AddedToken(s, special=True, normalized=False)
                                                          for s in specials]})
    tok.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", special=False, normalized=False) for i in range(1501)])
    return tok


def generation_config(tok: Any, decoder_layers: int, decoder_heads: int) -> Any:
    """Whisper's generation config for `tok`: language and task ids, timestamp ids, alignment heads (the last
    decoder layer's heads, as in the larger checkpoints)."""
    from transformers import GenerationConfig
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    ids = lambda t: int(tok.convert_tokens_to_ids(t))  # noqa: E731
    eot = ids("<|endoftext|>")
    return GenerationConfig(
        decoder_start_token_id=ids("<|startoftranscript|>"), eos_token_id=eot, pad_token_id=eot, bos_token_id=eot,
        lang_to_id={f"<|{c}|>": ids(f"<|{c}|>") for c in LANGUAGES},
        task_to_id={"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"), prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=True, max_initial_timestamp_index=50, max_length=448,
        alignment_heads=[[decoder_layers - 1, h] for h in range(decoder_heads)],
        begin_suppress_tokens=[ids("Ġ"), eot], suppress_tokens=[])


def random_whisper(shape: dict[str, int] | None = None, vocab_size: int | None = None, tok: Any = None,
                   seed: int = 0, init_std: float | None = None) -> Any:
    """A WhisperForConditionalGeneration of `shape` (default TINY) with random weights. With `tok`, its ids and
    generation config are the tokenizer's; without, `vocab_size` tokens and large-v3's ids."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    shape = {**TINY, **(shape or {})}
    if tok is not None:
        eot, sot = int(tok.convert_tokens_to_ids("<|endoftext|>")), int(tok.convert_tokens_to_ids("<|startoftranscript|>"))
        vocab = len(tok)
        begin = [int(tok.convert_tokens_to_ids("Ġ")), eot]
    else:
        vocab = vocab_size or LARGE_V3_TURBO_VOCAB
        eot, sot, begin = 50257, 50258, [220, 50257]
    config = WhisperConfig(vocab_size=vocab, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                           decoder_start_token_id=sot, begin_suppress_tokens=begin, suppress_tokens=[], **shape)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    if init_std is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, init_std)
    if tok is not None:
        model.generation_config = generation_config(tok, shape["decoder_layers"], shape["decoder_attention_heads"])
    return model.eval()


def build_tiny_whisper(folder: str | Path, seed: int = 0, init_std: float = 0.3) -> Path:
    """Build and save a tiny random Whisper (model, tokenizer, feature extractor, generation config) in `folder`.

    `init_std` is large on purpose: with the default 0.02 greedy decoding repeats one token forever.
    """
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    model = random_whisper(TINY, tok=tok, seed=seed, init_std=init_std)
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=TINY["num_mel_bins"]),
                                 tokenizer=tok)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------ Qwen3-ASR
_QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_end|>", "<|audio_pad|>",
                 "<asr_text>"]
# Qwen's chat format with an audio part: what Qwen3ASRProcessor.apply_transcription_request renders
_QWEN_TEMPLATE = (
    "{%- for message in messages -%}<|im_start|>{{ message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}{%- for c in message['content'] -%}"
    "{%- if c['type'] == 'audio' -%}<|audio_start|><|audio_pad|><|audio_end|>"
    "{%- elif c['type'] == 'text' -%}{{ c['text'] }}{%- endif -%}{%- endfor -%}{%- endif -%}<|im_end|>\n"
    "{%- endfor -%}{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}")


def build_tiny_qwen3_asr(folder: str | Path, seed: int = 0, init_std: float = 0.5) -> Path:
    """Build and save a tiny random Qwen3-ASR (transformers >= 5.24): Qwen3ASRForConditionalGeneration, a byte-level
    BPE Qwen tokenizer with the audio tokens, the real feature extractor and processor, in `folder`. `init_std` is
    large on purpose: with the default 0.02 the model ends every answer at once."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast, Qwen3ASRConfig, Qwen3ASRForConditionalGeneration
    from transformers.models.qwen3_asr.feature_extraction_qwen3_asr import Qwen3ASRFeatureExtractor
    from transformers.models.qwen3_asr.processing_qwen3_asr import Qwen3ASRProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = ["language English<asr_text>" + _CORPUS[0], "language Chinese<asr_text>你好，世界。", "system user assistant"]
    bpe.train_from_iterator(corpus * 4, trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=_QWEN_SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = Qwen2TokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
                             bos_token=None, extra_special_tokens={"audio_token": "<|audio_pad|>",
                                                                   "audio_bos_token": "<|audio_start|>",
                                                                   "audio_eos_token": "<|audio_end|>"})
    ids = {s: int(tok.convert_tokens_to_ids(s)) for s in _QWEN_SPECIAL}
    config = Qwen3ASRConfig(
        audio_config=dict(encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32, output_dim=48,
                          downsample_hidden_size=16, num_mel_bins=128),
        text_config=dict(model_type="qwen3", hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=12, vocab_size=len(tok),
                         max_position_embeddings=4096, tie_word_embeddings=True),
        audio_token_id=ids["<|audio_pad|>"], pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], timestamp_token_id=ids["<asr_text>"])
    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, init_std)
    model.save_pretrained(folder)
    Qwen3ASRProcessor(feature_extractor=Qwen3ASRFeatureExtractor(), tokenizer=tok,
                      chat_template=_QWEN_TEMPLATE).save_pretrained(folder)
    return folder
