"""PocketSphinx: the speech engine that needs no download. The PyPI wheel `pocketsphinx` (5.x) ships CMU Sphinx's
US English acoustic model, language model and dictionary inside it, so it runs offline anywhere, on the CPU.

It knows English only, writes lower-case words without punctuation, and is far less accurate than Whisper
(measured on clear synthetic espeak-ng speech: word error rate 0.22 in the tests, 0.38 in benchmarks/transcribe.py). Each stretch of speech the voice detector
found is decoded as one utterance; segments are cut at pauses inside it, words keep their own times.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any

import numpy as np

from core.speech.engine import ChunkAudio, ChunkResult, SpeechEngine, SpeechEngineInfo
from core.speech.errors import SpeechEngineUnavailable
from core.speech.types import Segment, Word, join_words

NAME = "pocketsphinx"
MODEL = "cmusphinx-en-us"
# search settings: the default beams, no second (flat) pass and fewer active HMMs per frame: on seven espeak-ng
# sentences the same word error rate as PocketSphinx's defaults (0.14) at about 1.5x their speed
DECODER_OPTIONS: dict[str, Any] = {"fwdflat": False, "maxhmmpf": 10000}
PAUSE_S = 0.35  # a silence this long inside an utterance ends a segment
MAX_SEGMENT_S = 12.0  # ... and a segment never runs longer than this
BETTER_MODEL = ("This transcript was made by PocketSphinx, the offline engine that needs no download: English only, "
                "lower-case words without punctuation, and many words wrong. A Whisper model "
                "(openai/whisper-large-v3-turbo) would add language detection, punctuation and capitals, far better "
                "accuracy, and about 100 languages besides English.")
_ALT = re.compile(r"\(\d+\)$")


def version() -> str | None:
    """The installed pocketsphinx version, None when it is not installed."""
    try:
        return importlib.metadata.version("pocketsphinx")
    except importlib.metadata.PackageNotFoundError:
        return None


def _is_word(token: str) -> bool:
    return bool(token) and not token.startswith(("<", "[", "+")) and token not in ("sil", "SIL")


class PocketSphinxEngine(SpeechEngine):
    """CMU PocketSphinx with the US English model its wheel ships (CPU, one chunk at a time)."""

    name = NAME
    detects_language = False

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(MODEL, batch_size=1)
        self.options = {**DECODER_OPTIONS, **(options or {})}
        self._decoder: Any = None
        self._frate = 100

    def _load(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise SpeechEngineUnavailable(
                "The offline speech engine PocketSphinx is not installed.",
                "Install it into VLScope's environment: .venv/bin/pip install 'pocketsphinx>=5'.") from None
        try:
            self._decoder = Decoder(loglevel="ERROR", **self.options)
        except (RuntimeError, ValueError) as exc:
            raise SpeechEngineUnavailable(f"PocketSphinx could not load its English model ({exc}).",
                                          "Reinstall it: .venv/bin/pip install --force-reinstall pocketsphinx.") from None
        self._frate = int(self._decoder.config["frate"] or 100)

    def material(self) -> dict[str, Any]:
        return {"engine": NAME, "model": MODEL, "version": version(), "options": self.options, "pause_s": PAUSE_S,
                "max_segment_s": MAX_SEGMENT_S, "format": 1}

    def info(self) -> SpeechEngineInfo:
        return SpeechEngineInfo(name=NAME, model=MODEL, label=f"PocketSphinx {version() or ''} (US English, offline)"
                                .replace("  ", " "), loaded=self.loaded, device="cpu", dtype="",
                                detects_language=False, word_times=True, languages="English",
                                notes=[BETTER_MODEL])

    def _utterance(self, samples: np.ndarray, offset: float) -> list[Word]:
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        dec = self._decoder
        # a new stream resets the front end's noise estimate, which otherwise carries over from the sound decoded
        # before: without it the same file's words changed with what this process had transcribed earlier
        # ("nine in the morning" heard as "the id the morning" after another video)
        dec.start_stream()
        dec.start_utt()
        dec.process_raw(pcm, no_search=False, full_utt=True)
        dec.end_utt()
        words = []
        for seg in dec.seg():
            token = _ALT.sub("", str(seg.word))
            start = offset + seg.start_frame / self._frate
            end = offset + (seg.end_frame + 1) / self._frate
            if not _is_word(token):
                words.append(Word(start, end, ""))  # a pause: kept to cut segments, dropped after
                continue
            prob = getattr(seg, "prob", None)
            words.append(Word(start, end, token.lower(), prob if prob is not None and 0 <= prob <= 1 else None))
        return words

    def _transcribe(self, chunks: list[ChunkAudio], language: str | None, word_times: bool) -> list[ChunkResult]:
        results = []
        for chunk in chunks:
            segments: list[Segment] = []
            for start, end in chunk.regions or ((chunk.start, chunk.end),):
                samples = chunk.stretch(start, end)
                if samples.size < chunk.sample_rate // 10:
                    continue
                segments += _segments(self._utterance(samples, start))
            results.append(ChunkResult(segments, "en", None))
        return results

    def close(self) -> None:
        self._decoder = None
        super().close()


def _segments(tokens: list[Word]) -> list[Segment]:
    """Segments cut at pauses of PAUSE_S or longer (and at MAX_SEGMENT_S) from an utterance's words and pauses."""
    out: list[Segment] = []
    current: list[Word] = []

    def flush() -> None:
        if current:
            out.append(Segment(current[0].start, current[-1].end, join_words(w.text for w in current),
                               tuple(current)))
            current.clear()

    for tok in tokens:
        if not tok.text:
            if tok.end - tok.start >= PAUSE_S:
                flush()
            continue
        if current and tok.end - current[0].start > MAX_SEGMENT_S:
            flush()
        current.append(tok)
    flush()
    return out
