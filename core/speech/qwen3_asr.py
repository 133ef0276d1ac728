"""Qwen3-ASR through transformers (`Qwen3ASRForConditionalGeneration` + its processor; in transformers from 5.24,
not in 5.17): the language detected and the text of each stretch of speech. It gives no times of its own, so each
stretch the voice detector found becomes one segment with that stretch's times, and words have no times (Qwen's
separate forced-aligner model is not used yet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.speech.engine import ChunkAudio, ChunkResult, SpeechEngine, SpeechEngineInfo
from core.speech.errors import SpeechEngineUnavailable, SpeechModelUnavailable
from core.speech.types import Segment

NAME = "qwen3_asr"
TOKENS_PER_SECOND = 12.0  # most tokens a stretch's text may take per second of sound (runaway decoding stops)


class Qwen3AsrEngine(SpeechEngine):
    """A Qwen3-ASR checkpoint (hub id or folder, resolved to `path`) on `device`."""

    name = NAME
    detects_language = True

    def __init__(self, model: str, path: Path, device: str = "auto", batch_size: int | None = None) -> None:
        from core.vlm.loading import pick_device

        self.device = pick_device(device)
        super().__init__(model, batch_size or (8 if self.device.startswith("cuda") else 2))
        self.path = Path(path)
        self.model_obj: Any = None
        self.processor: Any = None
        self.dtype: Any = None
        self._fingerprint: str | None = None

    def _load(self) -> None:
        import torch

        try:
            from transformers import AutoProcessor, Qwen3ASRForConditionalGeneration
        except ImportError:
            import transformers

            raise SpeechEngineUnavailable(f"The installed transformers {transformers.__version__} has no Qwen3-ASR.",
                                          "Upgrade transformers (.venv/bin/pip install -U 'transformers>=5.24'), or "
                                          "choose the whisper or pocketsphinx engine.") from None
        from core.vlm.loading import pick_dtype

        self.dtype = pick_dtype("auto", self.device)
        try:
            self.processor = AutoProcessor.from_pretrained(str(self.path))
            model = Qwen3ASRForConditionalGeneration.from_pretrained(str(self.path), dtype=self.dtype)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SpeechModelUnavailable(self.model or str(self.path), f"loading from {self.path} failed "
                                         f"({type(exc).__name__}: {str(exc).strip()[:200]})") from None
        except torch.OutOfMemoryError:
            raise SpeechEngineUnavailable("Out of GPU memory while loading the speech model.",
                                          "Free GPU memory or set VLSCOPE_SPEECH_DEVICE=cpu.") from None
        self.model_obj = model.to(self.device).eval()

    def material(self) -> dict[str, Any]:
        from core.speech.weights import weights_fingerprint
        from core.vlm.loading import dtype_name, pick_dtype

        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.path)
        dtype = self.dtype if self.dtype is not None else pick_dtype("auto", self.device)
        return {"engine": NAME, "model": self.model, "weights": self._fingerprint, "dtype": dtype_name(dtype),
                "tokens_per_second": TOKENS_PER_SECOND, "format": 1}

    def info(self) -> SpeechEngineInfo:
        from core.vlm.loading import dtype_name

        return SpeechEngineInfo(name=NAME, model=self.model, label=f"Qwen3-ASR ({self.model})", loaded=self.loaded,
                                device=self.device, dtype=dtype_name(self.dtype) if self.dtype is not None else "",
                                detects_language=True, word_times=False, languages="30 languages",
                                notes=["segments take the times of the stretches of speech; words have no times"])

    def close(self) -> None:
        self.model_obj = None
        self.processor = None
        super().close()

    def _transcribe(self, chunks: list[ChunkAudio], language: str | None, word_times: bool) -> list[ChunkResult]:
        import torch
        from transformers.models.qwen3_asr.processing_qwen3_asr import LANGUAGE_CODE_TO_NAME

        names = {v.lower(): k for k, v in LANGUAGE_CODE_TO_NAME.items()}
        items: list[tuple[int, float, float]] = []
        for ci, chunk in enumerate(chunks):
            for start, end in chunk.regions or ((chunk.start, chunk.end),):
                if chunk.stretch(start, end).size >= chunk.sample_rate // 10:
                    items.append((ci, start, end))
        texts: list[dict[str, Any]] = []
        for at in range(0, len(items), self.batch_size):
            part = items[at:at + self.batch_size]
            audio = [chunks[ci].stretch(s, e) for ci, s, e in part]
            try:
                inputs = self.processor.apply_transcription_request(audio=audio, language=language)
            except ValueError as exc:
                raise SpeechEngineUnavailable(f"Qwen3-ASR cannot transcribe the language {language!r} ({exc}).",
                                              "Give one of its languages as an ISO code (en, zh, de...), or leave "
                                              "the language out so it detects it.") from None
            inputs = inputs.to(self.device)
            if "input_features" in inputs:
                inputs["input_features"] = inputs["input_features"].to(self.dtype)
            longest = max(e - s for _, s, e in part)
            try:
                with torch.inference_mode():
                    out = self.model_obj.generate(**inputs, max_new_tokens=int(TOKENS_PER_SECOND * longest) + 16,
                                                  do_sample=False)
            except torch.OutOfMemoryError:
                raise SpeechEngineUnavailable("Out of GPU memory while transcribing.",
                                              "Free GPU memory, or set VLSCOPE_SPEECH_DEVICE=cpu.") from None
            new = out[:, inputs["input_ids"].shape[1]:]
            for row in new:
                texts.append(self.processor.decode(row, return_format="parsed"))
        results = [ChunkResult([], None, None) for _ in chunks]
        heard: list[dict[str, float]] = [dict() for _ in chunks]
        for (ci, start, end), parsed in zip(items, texts):
            text = str(parsed.get("transcription") or "").strip()
            lang = parsed.get("language")
            code = names.get(str(lang).lower(), language) if lang else language
            if code:
                heard[ci][code] = heard[ci].get(code, 0.0) + (end - start)
            if text:
                results[ci].segments.append(Segment(start, end, text))
        for ci, langs in enumerate(heard):
            if langs:
                results[ci].language = max(langs, key=lambda k: langs[k])
        return results
