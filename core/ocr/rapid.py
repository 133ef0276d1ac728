"""The process's one RapidOCR object, shared by the document OCR engine (core.ocr.engines) and the on-screen
text of videos (core.media.text): its models load once.

The object keeps per-call state (which of detection, classification, recognition run sticks from one
call to the next), so every call goes through `run_rapidocr`, under one lock, naming all three.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from core.ocr.types import OcrError

PARAMS = {"Global.log_level": "critical", "Det.limit_type": "max", "Det.limit_side_len": 1280}
_lock = threading.Lock()
_instance: Any = None


def shared_rapidocr() -> Any:
    """The RapidOCR object of this process (made on first use); raises OcrError when rapidocr is missing."""
    global _instance
    with _lock:
        if _instance is None:
            try:
                from rapidocr import RapidOCR
            except ImportError as exc:
                raise OcrError("RapidOCR is not installed; pip install rapidocr onnxruntime") from exc
            _instance = RapidOCR(params=dict(PARAMS))
        return _instance


def run_rapidocr(image: np.ndarray, det: bool = True, cls: bool = True, rec: bool = True) -> Any:
    """One RapidOCR call on `image` (BGR, as RapidOCR reads arrays) with the steps named; one call at a time."""
    engine = shared_rapidocr()
    with _lock:
        return engine(image, use_det=det, use_cls=cls, use_rec=rec)
