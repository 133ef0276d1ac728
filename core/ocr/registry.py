"""The OCR engines of a process: `OcrRegistry(settings, model_engine=...)`.

RapidOCR and Tesseract are one instance each per process (RapidOCR's models load once, core.ocr.rapid).
The model entry (`vlm`) wraps the engine `model_engine()` returns: the application's one core.vlm engine
(`Runtime.engine`), so an OCR run with the model shares its weights, its lock and its request ledger
with every other use of the model. A registry made without `model_engine` (a library call) has no
model entry and says so.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from core.ocr.base import OcrEngine
from core.ocr.engines import RapidOcrEngine, TesseractEngine, tesseract_languages
from core.ocr.types import OcrError
from core.settings import Settings

VLM_OCR_MAX_NEW_TOKENS = 1024
"""Tokens the model may write for one page (a full page of text with boxes needs several hundred)."""

_local_lock = threading.Lock()
_local: dict[str, OcrEngine] = {}


def _local_engine(name: str) -> OcrEngine:
    """The process's RapidOCR or Tesseract engine object (made on first use)."""
    with _local_lock:
        if name not in _local:
            _local[name] = RapidOcrEngine() if name == "rapidocr" else TesseractEngine()
        return _local[name]


@dataclass
class EngineStatus:
    """Whether an engine runs here, its languages and how to add more."""

    name: str
    available: bool
    languages: list[str]
    how_to_add: str


class OcrRegistry:
    """Hands out the OCR engines by name: rapidocr, tesseract and (given `model_engine`) vlm."""

    def __init__(self, settings: Settings, model_engine: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self._model_engine = model_engine
        self._vlm: OcrEngine | None = None
        self._lock = threading.Lock()

    @property
    def has_model(self) -> bool:
        """True when the registry can read with the model (it was given the model engine)."""
        return self._model_engine is not None

    def get(self, name: str) -> OcrEngine:
        """The engine called `name`; raises OcrError when it is unknown or cannot run here."""
        name = (name or "").lower()
        if name == "vlm":
            return self._vlm_engine()
        if name not in ("rapidocr", "tesseract"):
            raise OcrError(f"unknown OCR engine {name!r}; choose rapidocr, tesseract, vlm or auto")
        engine = _local_engine(name)
        if not engine.available():
            hint = "pip install rapidocr onnxruntime" if name == "rapidocr" else "apt-get install tesseract-ocr"
            raise OcrError(f"OCR engine {name} is not available here; {hint}")
        return engine

    def _vlm_engine(self) -> OcrEngine:
        with self._lock:
            if self._vlm is None:
                if self._model_engine is None:
                    raise OcrError("Reading with Qwen3-VL needs the application's model engine, which this call "
                                   "was not given.", "Read through the dashboard, `vlscope ocr --engine vlm` or "
                                   "the API, or choose the rapidocr or tesseract engine.")
                from core.ocr.vlm import VlmOcrEngine
                from core.vlm import EngineError

                try:
                    engine = self._model_engine()
                except EngineError as exc:
                    raise OcrError(f"The Qwen3-VL engine is not available: {exc}",
                                   "Use --engine rapidocr or tesseract.") from exc
                self._vlm = VlmOcrEngine(engine=engine, model=self._model_name(),
                                         max_new_tokens=VLM_OCR_MAX_NEW_TOKENS)
            return self._vlm

    def _model_name(self) -> str:
        s = self.settings
        return (s.remote_model or "remote") if s.engine == "remote" else s.model

    def version(self, name: str) -> str:
        """The version string of engine `name` for cache keys (`<name>-missing` when it cannot run here)."""
        if name == "vlm":
            return f"vlm:{self._model_name()}"
        try:
            return self.get(name).version()
        except OcrError:
            return f"{name}-missing"

    def status(self) -> list[EngineStatus]:
        """Every CPU OCR engine with its languages (for the dashboard's language list)."""
        rapid = _local_engine("rapidocr")
        tess = _local_engine("tesseract")
        return [
            EngineStatus("rapidocr", rapid.available(), rapid.languages() if rapid.available() else [],
                         "models ship inside the rapidocr wheel (pip install rapidocr onnxruntime)"),
            EngineStatus("tesseract", tess.available(), tess.languages() + [f"pack:{p}" for p in tesseract_languages()],
                         "apt-get install tesseract-ocr-<pack> (e.g. tesseract-ocr-ara, tesseract-ocr-jpn-vert)"),
        ]
