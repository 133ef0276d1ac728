"""The process's one RapidOCR object, shared by the document OCR engine (core.ocr.engines) and the on-screen
text of videos (core.media.text): its models load once.

The object keeps per-call state (which of detection, classification, recognition run sticks from one
call to the next), so every call goes through `run_rapidocr`, under one lock, naming all three.

Recognition costs in proportion to the width of each line crop once it is scaled to the model's 48 px
height (about 15 ms per 320 px on 2 cores, linear): a printed A4 page is 40 crops about 1,900 px wide, 3.3 s
of its 3.7 s. `run_rapidocr(..., narrow=NARROW)` recognises each wide crop narrowed to NARROW of its width
first, RapidOCR's own flow otherwise unchanged (its detection, crops, scores and boxes): at 0.65 a Latin line
keeps 14-15 px per letter at 48 px height (the same reading on the measured pages; 0.5 began to drop letters),
for 0.6x the recognition time. Han, kana and hangul lose strokes when squeezed, so a crop whose narrowed reading is
mostly CJK, or unsure, is read again at full width (`recognise_narrowed`). The plain engine (`narrow=1.0`, the
default of `run_rapidocr`) is what the evaluations compare with.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from core.ocr.types import OcrError

NARROW = 0.65
"""The width a wide line crop is recognised at, as a fraction of its own (benchmarks/ocr_reading.py)."""
NARROW_MIN_RATIO = 4.0
"""Only crops at least this many times wider than high are narrowed: short ones cost little as they are."""
FULL_WIDTH_BELOW = 0.85
"""A narrowed crop read with less confidence than this is read again at full width (`needs_full_width`)."""
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


def narrowed(crop: np.ndarray, narrow: float) -> np.ndarray:
    """`crop` (one text line) `narrow` times as wide when it is at least NARROW_MIN_RATIO times wider than high;
    as it is otherwise."""
    h, w = crop.shape[:2]
    if narrow >= 1.0 or h == 0 or w < NARROW_MIN_RATIO * h:
        return crop
    import cv2

    return cv2.resize(crop, (max(1, round(w * narrow)), h), interpolation=cv2.INTER_AREA)


def needs_full_width(text: str, score: float) -> bool:
    """Whether a reading of a narrowed crop is to be checked at full width: mostly CJK (square glyphs lose strokes
    when squeezed: on the evaluation pages narrowing doubled the CER of printed Chinese), or not sure of itself."""
    letters = [c for c in text if not c.isspace()]
    if not letters:
        return True
    wide = sum(1 for c in letters if _is_cjk(c))
    return wide * 10 >= 3 * len(letters) or score < FULL_WIDTH_BELOW


def _is_cjk(c: str) -> bool:
    o = ord(c)
    return (0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF
            or 0xF900 <= o <= 0xFAFF or 0xFF00 <= o <= 0xFFEF or 0x20000 <= o <= 0x2FA1F)


def recognise_narrowed(recognise: Any, crops: list[np.ndarray], narrow: float) -> Any:
    """`recognise(crops)` (RapidOCR's recognize_txt) with the wide crops narrowed (`narrowed`); the crops whose
    narrowed reading `needs_full_width` are read again as they are, and that reading is kept where it is CJK or
    scores at least as well."""
    small = [narrowed(c, narrow) for c in crops]
    out = recognise(small)
    txts, scores = list(out.txts or ()), list(out.scores or ())
    if len(txts) != len(crops) or len(scores) != len(crops):
        return out
    again = [i for i, (c, s) in enumerate(zip(crops, small)) if s is not c and needs_full_width(txts[i], scores[i])]
    if not again:
        return out
    full = recognise([crops[i] for i in again])
    words = list(out.word_results) if len(out.word_results or ()) == len(crops) else None
    full_words = list(full.word_results) if len(full.word_results or ()) == len(again) else None
    for j, i in enumerate(again):
        text, score = full.txts[j], float(full.scores[j])
        if score >= scores[i] or needs_full_width(text, 1.0):
            txts[i], scores[i] = text, score
            if words is not None and full_words is not None:
                words[i] = full_words[j]
    out.txts, out.scores = tuple(txts), scores
    if words is not None:
        out.word_results = tuple(words)
    return out


def run_rapidocr(image: np.ndarray, det: bool = True, cls: bool = True, rec: bool = True,
                 narrow: float = 1.0) -> Any:
    """One RapidOCR call on `image` (BGR, as RapidOCR reads arrays) with the steps named; one call at a time.
    `narrow` < 1: wide line crops are recognised that much narrower (NARROW); boxes stay those of the image."""
    engine = shared_rapidocr()
    with _lock:
        recognise = getattr(type(engine), "recognize_txt", None)
        if narrow >= 1.0 or not rec or recognise is None:
            return engine(image, use_det=det, use_cls=cls, use_rec=rec)
        # RapidOCR hands its (classified) crops to recognize_txt: narrow them on the way in, for this call only
        engine.recognize_txt = lambda crops: recognise_narrowed(lambda batch: recognise(engine, batch), crops, narrow)
        try:
            return engine(image, use_det=det, use_cls=cls, use_rec=rec)
        finally:
            del engine.recognize_txt
