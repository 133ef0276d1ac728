"""OCR: offline engines (RapidOCR, Tesseract, Qwen3-VL) behind one interface, preprocessing, PDFs,
tables, invoice fields and exports. Never imports streamlit.

`OcrRegistry` (core.ocr.registry) hands out a process's engines; its model entry wraps the
application's one model engine (core.app.Runtime builds it)."""

from core.ocr.base import EngineOutput, OcrEngine
from core.ocr.engines import RapidOcrEngine, TesseractEngine
from core.ocr.loading import PageImage, count_pages, iter_pages, load_image, parse_pages
from core.ocr.pipeline import OcrOptions, ocr_image, preview_preprocessing, run_ocr
from core.ocr.preprocess import PreprocessOptions, StepRecord, preprocess
from core.ocr.registry import EngineStatus, OcrRegistry
from core.ocr.types import (
    Annotation,
    InvoiceFields,
    LineItem,
    OcrError,
    OcrLine,
    OcrPage,
    OcrResult,
    PreprocessInfo,
    Table,
    TableCell,
)

__all__ = [
    "Annotation", "EngineOutput", "EngineStatus", "InvoiceFields", "LineItem", "OcrEngine", "OcrError", "OcrLine", "OcrOptions",
    "OcrPage", "OcrRegistry", "OcrResult", "PageImage", "PreprocessInfo", "PreprocessOptions", "RapidOcrEngine",
    "StepRecord", "Table", "TableCell", "TesseractEngine", "count_pages", "iter_pages", "load_image", "ocr_image",
    "parse_pages", "preprocess", "preview_preprocessing", "run_ocr",
]
