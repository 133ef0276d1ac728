"""OCR: offline engines (RapidOCR, Tesseract, Qwen3-VL) behind one interface, preprocessing, PDFs,
tables, invoice fields and exports. Never imports streamlit."""

from core.ocr.engines import EngineOutput, EngineStatus, OcrEngine, RapidOcrEngine, TesseractEngine, engine_status, get_engine
from core.ocr.loading import PageImage, count_pages, iter_pages, load_image, parse_pages
from core.ocr.pipeline import OcrOptions, ocr_image, preview_preprocessing, run_ocr, run_ocr_cached
from core.ocr.preprocess import PreprocessOptions, StepRecord, preprocess
from core.ocr.types import (
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
    "EngineOutput", "EngineStatus", "InvoiceFields", "LineItem", "OcrEngine", "OcrError", "OcrLine", "OcrOptions",
    "OcrPage", "OcrResult", "PageImage", "PreprocessInfo", "PreprocessOptions", "RapidOcrEngine", "StepRecord",
    "Table", "TableCell", "TesseractEngine", "count_pages", "engine_status", "get_engine", "iter_pages",
    "load_image", "ocr_image", "parse_pages", "preprocess", "preview_preprocessing", "run_ocr", "run_ocr_cached",
]
