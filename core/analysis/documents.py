"""Questions about images and PDF pages ("describe this", "extract the table", "what does this button do?").

An OCR switch first reads the text (core.ocr) and gives it to the model as context, for scans and
invoices. Boxes the model returns in Qwen3-VL's 0-1000 relative coordinates are mapped to pixels.
The application layer (core.app.documents) calls this with the runtime's engine, settings and a
cache-through OCR reader.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from core.vlm.base import Engine
from core.vlm.types import GenerationParams, ImagePart, TextPart, user

if TYPE_CHECKING:  # pragma: no cover - typing only
    from core.ocr.pipeline import OcrOptions
    from core.ocr.types import OcrResult

OcrReader = Callable[[Any, "OcrOptions"], "OcrResult"]
"""read(path, options) -> OcrResult: how the text given as context is read (e.g. through the result cache)."""

MAX_PAGES = 8
_BOX_KEYS = ("bbox_2d", "bbox", "box", "box_2d")
_LIST4 = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]")


@dataclass
class Box:
    """A region the model pointed at: page (0-based), pixel corners and its label."""

    page: int
    x1: float
    y1: float
    x2: float
    y2: float
    label: str = ""


@dataclass
class DocumentAnswer:
    """An answer about an image or PDF pages, the boxes it names, and what context the model had."""

    question: str
    text: str
    boxes: list[Box] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)
    ocr_used: bool = False
    ocr_chars: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def relative_to_pixels(box: list[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Qwen3-VL's 0-1000 relative box -> pixel corners, ordered and clamped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))

    def cx(v: float) -> float:
        return min(max(v, 0.0), 1000.0) * width / 1000.0

    def cy(v: float) -> float:
        return min(max(v, 0.0), 1000.0) * height / 1000.0

    return cx(x1), cy(y1), cx(x2), cy(y2)


def parse_boxes(text: str, sizes: list[tuple[int, int]]) -> list[Box]:
    """Boxes in a model answer (JSON with `bbox_2d`, or bare [x1, y1, x2, y2] lists) mapped to pixels.

    `sizes` are (width, height) of each page; boxes go to the first page unless an item names `page`.
    """
    if not sizes:
        return []
    boxes: list[Box] = []
    body = text
    fenced = re.findall(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        body = "\n".join(fenced)
    items: list[Any] = []
    start = min([i for i in (body.find("["), body.find("{")) if i >= 0], default=-1)
    if start >= 0:
        try:
            data = json.loads(body[start:body.rfind("]" if body[start] == "[" else "}") + 1])
            items = data if isinstance(data, list) else [data]
        except (json.JSONDecodeError, ValueError):
            items = []
    for item in items:
        if not isinstance(item, dict):
            continue
        raw = next((item[k] for k in _BOX_KEYS if k in item), None)
        if not (isinstance(raw, list) and len(raw) == 4 and all(isinstance(v, (int, float)) for v in raw)):
            continue
        page = int(item.get("page", 1)) - 1 if str(item.get("page", "1")).isdigit() else 0
        page = min(max(page, 0), len(sizes) - 1)
        w, h = sizes[page]
        label = str(item.get("label", item.get("text", ""))).strip()
        boxes.append(Box(page, *relative_to_pixels(raw, w, h), label=label[:200]))
    if not boxes:  # bare lists in prose: "the button is at [120, 40, 300, 90]"
        for m in _LIST4.finditer(text):
            w, h = sizes[0]
            boxes.append(Box(0, *relative_to_pixels([float(g) for g in m.groups()], w, h)))
    return boxes


def load_pages(path: str | Path | bytes, pages: str | None = "1", dpi: int = 150,
               max_pixels: int = 178_956_970, settings: Any = None) -> Iterator[tuple[int, np.ndarray]]:
    """(page index, RGB pixels) of an image or the chosen PDF pages (at most MAX_PAGES)."""
    from core.ocr.loading import iter_pages

    for page in iter_pages(path, pages=pages, dpi=dpi, max_pixels=max_pixels, max_pages=MAX_PAGES,
                           settings=settings):
        yield page.index, page.image


def ask_document(engine: Engine, path: str | Path, question: str, pages: str | None = "1", ocr: bool = False,
                 params: GenerationParams | None = None, settings: Any = None,
                 read: OcrReader | None = None) -> DocumentAnswer:
    """Answer `question` about an image or PDF pages; with `ocr`, the text read first (by `read`, default
    core.ocr's run_ocr with these settings) is given as context."""
    started = time.perf_counter()
    result = DocumentAnswer(question=question, text="")
    images: list[np.ndarray] = []
    for index, image in load_pages(path, pages, max_pixels=getattr(settings, "max_image_pixels", 178_956_970),
                                   settings=settings):
        images.append(image)
        result.pages.append(index)
    if not images:
        result.warnings.append("No page to look at: check the page range.")
        return result
    context = ""
    if ocr:
        from core.ocr.pipeline import OcrOptions, run_ocr

        page_spec = ",".join(str(i + 1) for i in result.pages)
        options = OcrOptions(pages=page_spec, tables=False, fields="off")
        text = (read(path, options) if read is not None else run_ocr(path, options, settings=settings)).text.strip()
        result.ocr_used = True
        result.ocr_chars = len(text)
        if text:
            context = f"Text read from the document by OCR (may contain errors):\n{text[:6000]}\n\n"
        else:
            result.warnings.append("OCR found no text on these pages.")
    parts: list[Any] = [ImagePart(img) for img in images]
    parts.append(TextPart(context + question))
    answer = engine.generate([user(*parts)], params, kind="document-qa")
    result.text = answer.text
    result.boxes = parse_boxes(answer.text, [(img.shape[1], img.shape[0]) for img in images])
    result.seconds = time.perf_counter() - started
    return result


def draw_boxes(image: np.ndarray, boxes: list[Box], page: int = 0) -> np.ndarray:
    """A copy of `image` with the page's boxes drawn (red rectangles)."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    for b in boxes:
        if b.page != page:
            continue
        cv2.rectangle(out, (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2)), (230, 30, 30), max(2, out.shape[1] // 400))
    return out
