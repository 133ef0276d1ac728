"""The interface every OCR engine implements (`OcrEngine`) and what one reading returns (`EngineOutput`).

Engines read an already preprocessed RGB image and return lines in that image's pixels, plus any tables
the engine itself rebuilt (the Qwen3-VL engine reads HTML tables; the others leave table finding to
core.ocr.tables).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from core.ocr.types import OcrLine, Table


@dataclass
class EngineOutput:
    """What an engine read on one image: lines (reading order), language hint used, script found, tables;
    for tesseract the language pack (`-l`) it read with, and which of its readings of the image this is
    (`variant`: "" the image as it is, else what was done so it reads)."""

    lines: list[OcrLine]
    engine: str
    language: str = ""
    script: str = ""
    vertical: bool = False
    warnings: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    pack: str = ""
    variant: str = ""

    @property
    def mean_confidence(self) -> float:
        """Character-weighted mean confidence (0 when empty)."""
        total = sum(len(ln.text) for ln in self.lines)
        return sum(ln.confidence * len(ln.text) for ln in self.lines) / total if total else 0.0


class OcrEngine(ABC):
    """An OCR backend: `read(image, lang, vertical)` -> EngineOutput."""

    name: str = ""

    @abstractmethod
    def available(self) -> bool:
        """True when the engine can run here."""

    @abstractmethod
    def languages(self) -> list[str]:
        """Language hints this engine reads here."""

    @abstractmethod
    def read(self, image: np.ndarray, lang: str | None = None, vertical: bool | None = None) -> EngineOutput:
        """Read an RGB image; `vertical` True forces vertical columns, False horizontal, None decides."""

    def version(self) -> str:
        """A version string that goes into cache keys."""
        return self.name
