"""Whisper through transformers (`WhisperForConditionalGeneration` + `WhisperProcessor`): segment times from
Whisper's timestamp tokens, word times from the cross-attention alignment heads (dynamic time warping, where the
checkpoint's generation config names them), the language detected per chunk with its probability. GPU when there
is one (bf16, or fp16 on older cards), fp32 on the CPU.

Chunks (at most 30 s each, cut by core.speech.chunks) are heard in batches: one encoder pass per batch, the
language read from that pass, then one `generate` call (no second 30-s window inside a chunk).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core.speech.engine import ChunkAudio, ChunkResult, SpeechEngine, SpeechEngineInfo
from core.speech.errors import SpeechEngineUnavailable, SpeechModelUnavailable
from core.speech.types import Segment, Word, is_cjk

log = logging.getLogger(__name__)

NAME = "whisper"
TOKENS_PER_SECOND = 12.0
"""Most tokens a chunk's transcript may take per second of sound (speech is 3 to 5 with timestamps): a model that
loops on a chunk stops there instead of at Whisper's 448-token limit."""
MIN_SEGMENT_S = 0.05


def _batch_size(device: str) -> int:
    return 16 if device.startswith("cuda") else 4


class WhisperEngine(SpeechEngine):
    """A Whisper checkpoint (hub id or folder, already resolved to `path`) on `device` (auto, cpu, cuda, cuda:N).

    `fixed_new_tokens`: decode exactly this many tokens per chunk (benchmarks with random weights, whose decoding
    would otherwise stop at once or run to the limit); None in real use.
    """

    name = NAME
    detects_language = True

    def __init__(self, model: str, path: Path, device: str = "auto", batch_size: int | None = None,
                 fixed_new_tokens: int | None = None) -> None:
        from core.vlm.loading import pick_device

        self.device = pick_device(device)
        super().__init__(model, batch_size or _batch_size(self.device))
        self.path = Path(path)
        self.fixed_new_tokens = fixed_new_tokens
        self.model_obj: Any = None
        self.processor: Any = None
        self.dtype: Any = None
        self._fingerprint: str | None = None
        self._word_heads = False

    @classmethod
    def from_loaded(cls, model: Any, processor: Any, device: str, name: str = "random", batch_size: int | None = None,
                    fixed_new_tokens: int | None = None) -> "WhisperEngine":
        """An engine over a model and processor already in memory (benchmarks with random weights of a real shape;
        in use, weights come through `load`)."""
        engine = cls(name, Path("."), device=device, batch_size=batch_size, fixed_new_tokens=fixed_new_tokens)
        engine.model_obj, engine.processor = model.to(engine.device).eval(), processor
        engine.dtype = next(model.parameters()).dtype
        engine._word_heads = bool(getattr(model.generation_config, "alignment_heads", None))
        engine._fingerprint = "in-memory"
        engine._loaded = True
        return engine

    # -- loading
    def _load(self) -> None:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from core.vlm.loading import pick_dtype

        self.dtype = pick_dtype("auto", self.device)
        try:
            self.processor = WhisperProcessor.from_pretrained(str(self.path))
            model = WhisperForConditionalGeneration.from_pretrained(str(self.path), dtype=self.dtype,
                                                                    attn_implementation="sdpa")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SpeechModelUnavailable(self.model or str(self.path),
                                         f"loading from {self.path} failed ({type(exc).__name__}: "
                                         f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc})") \
                from None
        except torch.OutOfMemoryError:
            raise SpeechEngineUnavailable("Out of GPU memory while loading the speech model.",
                                          "Free GPU memory (a smaller vision model, fewer kept prefixes) or set "
                                          "VLSCOPE_SPEECH_DEVICE=cpu.") from None
        model.to(self.device)
        model.eval()
        self.model_obj = model
        gc = model.generation_config
        if not getattr(gc, "lang_to_id", None) or getattr(gc, "no_timestamps_token_id", None) is None:
            raise SpeechModelUnavailable(self.model or str(self.path), "its generation_config.json has no language or "
                                         "timestamp tokens (lang_to_id, no_timestamps_token_id), which transcripts need")
        self._word_heads = bool(getattr(gc, "alignment_heads", None))

    def fingerprint(self) -> str:
        """The digest of the checkpoint's files (part of cache keys)."""
        if self._fingerprint is None:
            from core.speech.weights import weights_fingerprint

            self._fingerprint = weights_fingerprint(self.path)
        return self._fingerprint

    def material(self) -> dict[str, Any]:
        from core.vlm.loading import dtype_name, pick_dtype

        dtype = self.dtype if self.dtype is not None else pick_dtype("auto", self.device)
        return {"engine": NAME, "model": self.model, "weights": self.fingerprint(), "dtype": dtype_name(dtype),
                "tokens_per_second": TOKENS_PER_SECOND, "fixed_new_tokens": self.fixed_new_tokens, "format": 1}

    def info(self) -> SpeechEngineInfo:
        from core.vlm.loading import dtype_name

        notes = [] if (self._word_heads or not self.loaded) else [
            "this checkpoint names no alignment heads: segments have times, words do not"]
        return SpeechEngineInfo(name=NAME, model=self.model, label=f"Whisper ({self.model})", loaded=self.loaded,
                                device=self.device, dtype=dtype_name(self.dtype) if self.dtype is not None else "",
                                detects_language=True, word_times=self._word_heads or not self.loaded,
                                languages="about 100 languages", notes=notes)

    def close(self) -> None:
        self.model_obj = None
        self.processor = None
        super().close()

    # -- hearing
    def _languages(self, encoder_outputs: Any, n: int) -> tuple[list[str], list[float]]:
        """The language of each chunk (code, probability) from one decoder step on the encoder's output."""
        import torch

        model = self.model_obj
        gc = model.generation_config
        start = torch.full((n, 1), int(gc.decoder_start_token_id), dtype=torch.long, device=self.device)
        logits = model(encoder_outputs=encoder_outputs, decoder_input_ids=start, use_cache=False).logits[:, -1]
        tokens = list(gc.lang_to_id.keys())
        ids = torch.tensor([gc.lang_to_id[t] for t in tokens], device=logits.device)
        probs = logits.float()[:, ids].softmax(-1)
        best = probs.argmax(-1).tolist()
        return ([tokens[i].strip("<|>") for i in best],
                [float(probs[row, i]) for row, i in enumerate(best)])

    def _transcribe(self, chunks: list[ChunkAudio], language: str | None, word_times: bool) -> list[ChunkResult]:
        import torch

        if not chunks:
            return []
        model, fe = self.model_obj, self.processor.feature_extractor
        feats = fe([c.samples for c in chunks], sampling_rate=fe.sampling_rate, return_tensors="pt",
                   return_attention_mask=True, device=self.device)  # log-mel features on the GPU when there is one
        features = feats["input_features"].to(self.device, self.dtype)
        mask = feats["attention_mask"].to(self.device)
        words_wanted = bool(word_times and self._word_heads)
        longest = max(c.duration for c in chunks)
        limit = int(model.config.max_target_positions) - 8
        new_tokens = self.fixed_new_tokens or int(TOKENS_PER_SECOND * longest) + 16
        kwargs: dict[str, Any] = {"max_new_tokens": max(1, min(limit, new_tokens))}
        if self.fixed_new_tokens:
            kwargs["min_new_tokens"] = kwargs["max_new_tokens"]
        try:
            with torch.inference_mode():
                encoded = model.get_encoder()(features)
                if language:
                    codes, probs = [language.lower()] * len(chunks), [None] * len(chunks)
                else:
                    codes, probs = self._languages(encoded, len(chunks))
                out = model.generate(
                    input_features=features, encoder_outputs=encoded, attention_mask=mask, language=codes,
                    task="transcribe", return_timestamps=True, return_token_timestamps=words_wanted,
                    return_segments=True, force_unique_generate_call=True, **kwargs)
        except torch.OutOfMemoryError:
            raise SpeechEngineUnavailable("Out of GPU memory while transcribing.",
                                          "Free GPU memory, or set VLSCOPE_SPEECH_DEVICE=cpu.") from None
        except ValueError as exc:
            if language and "language" in str(exc).lower():
                raise SpeechEngineUnavailable(f"Whisper does not know the language {language!r}.",
                                              "Give an ISO code such as en, de, zh or ja, or leave the language "
                                              "out so Whisper detects it.") from None
            raise
        results = []
        for i, chunk in enumerate(chunks):
            segments = self._segments(out["segments"][i], chunk, words_wanted)
            results.append(ChunkResult(segments, codes[i], probs[i]))
        return results

    def _segments(self, raw: list[dict[str, Any]], chunk: ChunkAudio, words_wanted: bool) -> list[Segment]:
        tok = self.processor.tokenizer
        gc = self.model_obj.generation_config
        timestamp_begin = int(gc.no_timestamps_token_id) + 1
        special = set(tok.all_special_ids)
        out: list[Segment] = []
        last = chunk.start
        for item in raw:
            ids = [int(t) for t in item["tokens"].tolist()]
            text_idx = [k for k, t in enumerate(ids) if t < timestamp_begin and t not in special]
            text = tok.decode([ids[k] for k in text_idx], skip_special_tokens=True).strip()
            if not text:
                continue
            start = chunk.start + min(max(float(item["start"]), 0.0), chunk.duration)
            end = chunk.start + min(max(float(item["end"]), 0.0), chunk.duration)
            start = max(start, last)
            end = max(end, start)
            if start >= chunk.end - MIN_SEGMENT_S:
                continue  # timestamps past the end of the sound (a model that runs on into the padding)
            words: tuple[Word, ...] = ()
            if words_wanted and item.get("token_timestamps") is not None:
                words = self._words(ids, text_idx, [float(x) for x in item["token_timestamps"].tolist()], chunk,
                                    start, end)
            out.append(Segment(start, end, text, words))
            last = start
        return out

    def _words(self, ids: list[int], text_idx: list[int], times: list[float], chunk: ChunkAudio,
               seg_start: float, seg_end: float) -> tuple[Word, ...]:
        """Words from the segment's text tokens: a token whose piece starts with a space begins a word; pieces that
        do not decode to whole characters yet (a CJK character split over tokens) stay with the word before."""
        tok = self.processor.tokenizer
        groups: list[list[int]] = []
        for k in text_idx:
            piece = tok.convert_ids_to_tokens(ids[k]) or ""
            starts = piece.startswith(("Ġ", " ")) or not groups
            if not starts and groups:
                text_so_far = tok.decode([ids[j] for j in groups[-1]])
                starts = "\ufffd" not in text_so_far and is_cjk(text_so_far) and is_cjk(tok.decode([ids[k]]))
            if starts:
                groups.append([k])
            else:
                groups[-1].append(k)

        def at(k: int) -> float:
            t = chunk.start + (times[k] if k < len(times) else times[-1] if times else 0.0)
            return min(max(t, seg_start), seg_end)

        words = []
        for g in groups:
            text = tok.decode([ids[j] for j in g]).strip()
            if not text:
                continue
            after = g[-1] + 1
            end = at(after) if after < len(ids) and after < len(times) else seg_end
            words.append(Word(at(g[0]), max(end, at(g[0])), text))
        return tuple(words)
