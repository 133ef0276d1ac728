"""Document workflows, the same for the dashboard, the CLI and the API: read (OCR) and ask.

Reading goes through the runtime's result cache (every page stored as it is read), with the runtime's
settings and OCR engines, whose model entry is the runtime's one engine: an OCR run with Qwen3-VL and
a question about the same page share one set of weights and one request ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.analysis.documents import DocumentAnswer, ask_document
from core.events import CancelToken, Progress
from core.ocr.pipeline import OcrOptions, run_ocr
from core.ocr.types import OcrResult

if TYPE_CHECKING:  # pragma: no cover - typing only
    from core.app.context import AppContext
    from core.vlm.types import GenerationParams


class DocumentService:
    """Read documents into text, tables and fields, and answer questions about their pages."""

    def __init__(self, runtime: "AppContext") -> None:
        self.runtime = runtime

    def read(self, source: str | Path | bytes, options: OcrOptions | None = None, *, name: str | None = None,
             progress: Progress | None = None, cancel: CancelToken | None = None) -> OcrResult:
        """OCR a PDF or image (path or bytes) through the result cache; pages already read come from it.

        Raises OcrError (bad file, missing engine, page limit; the message names the fix), OcrBusy
        when other heavy work holds the memory, SettingsError / CacheUnavailable when the cache cannot open.
        """
        rt = self.runtime
        return run_ocr(source, options, name=name, settings=rt.settings, cache=rt.cache, engines=rt.ocr,
                       progress=progress, cancel=cancel)

    def ask(self, path: str | Path, question: str, pages: str | None = "1", ocr: bool = False,
            params: "GenerationParams | None" = None) -> DocumentAnswer:
        """Answer `question` about an image or PDF pages with the runtime's engine; with `ocr`, the text read
        first (through the cache) is given as context. Raises EngineError / OcrError with the fix."""
        rt = self.runtime
        return ask_document(rt.engine, path, question, pages=pages, ocr=ocr, params=params, settings=rt.settings,
                            read=lambda src, options: self.read(src, options))
