"""The `SpeechEngine` interface every speech recogniser implements (Whisper and Qwen3-ASR through transformers,
PocketSphinx offline), and what goes in and out of it: chunks of sound, segments with times of the file."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from core.speech.types import Segment


@dataclass
class ChunkAudio:
    """Sound to transcribe: `samples` (16 kHz mono float32) starting at `start` seconds of the file, and the
    stretches of speech the voice detector found inside it (seconds of the file)."""

    start: float
    samples: np.ndarray
    regions: tuple[tuple[float, float], ...] = ()
    sample_rate: int = 16_000

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / float(self.sample_rate)

    @property
    def end(self) -> float:
        """End in seconds of the file."""
        return self.start + self.duration

    def stretch(self, start: float, end: float) -> np.ndarray:
        """The samples between `start` and `end` seconds of the file (clipped to the chunk)."""
        lo = max(0, int(round((start - self.start) * self.sample_rate)))
        hi = min(len(self.samples), int(round((end - self.start) * self.sample_rate)))
        return self.samples[lo:max(lo, hi)]


@dataclass
class ChunkResult:
    """What an engine heard in one chunk: segments with times of the file, and the language when it detects one."""

    segments: list[Segment]
    language: str | None = None
    language_probability: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the cached value of a chunk)."""
        return {"segments": [s.to_dict() for s in self.segments], "language": self.language,
                "language_probability": self.language_probability}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChunkResult":
        """The ChunkResult of `to_dict`."""
        return cls([Segment.from_dict(s) for s in data["segments"]], data.get("language"),
                   data.get("language_probability"))


@dataclass
class SpeechEngineInfo:
    """What an engine is and where it runs (for the Home page, `vlscope info` and the transcript's header)."""

    name: str
    model: str | None
    label: str
    loaded: bool
    device: str = "cpu"
    dtype: str = ""
    detects_language: bool = False
    word_times: bool = False
    languages: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


class SpeechEngine(ABC):
    """A speech recogniser. `transcribe(chunks)` is thread-safe (one batch at a time) and loads the model on its
    first call. `chunks_transcribed` counts the chunks it was really asked to hear (not those read from the cache).
    """

    name: ClassVar[str] = ""
    detects_language: ClassVar[bool] = False

    def __init__(self, model: str | None, batch_size: int = 1) -> None:
        self.model = model
        self.batch_size = max(1, int(batch_size))
        self.calls = 0
        self.chunks_transcribed = 0
        self._lock = threading.Lock()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        """True once the model is in memory."""
        return self._loaded

    def load(self) -> None:
        """Load the model (once); SpeechEngineUnavailable / SpeechModelUnavailable naming the fix."""
        with self._lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    def transcribe(self, chunks: Sequence[ChunkAudio], language: str | None = None,
                   word_times: bool = True) -> list[ChunkResult]:
        """One result per chunk, in order: segments (times of the file, monotone within the chunk)."""
        self.load()
        with self._lock:
            self.calls += 1
            self.chunks_transcribed += len(chunks)
            return self._transcribe(list(chunks), language, word_times)

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def _transcribe(self, chunks: list[ChunkAudio], language: str | None, word_times: bool) -> list[ChunkResult]: ...

    @abstractmethod
    def material(self) -> dict[str, Any]:
        """What this engine's results depend on (model and its weights, options, version): part of cache keys."""

    @abstractmethod
    def info(self) -> SpeechEngineInfo:
        """What the engine is and where it runs."""

    def close(self) -> None:
        """Free the model."""
        self._loaded = False
