"""Qwen3-VL as an OCR engine through core.vlm's Engine interface: plain text, document markdown
("qwenvl markdown"), or lines with boxes from its 0-1000 relative coordinates mapped to pixels.
Tables come back as HTML and are rebuilt into cell grids (`EngineOutput.tables`). Unusable output becomes
an empty result with a warning, never a crash.

The engine it reads with is given to it: the process's one model engine (core.ocr.registry wraps the
application's engine), never one of its own."""

from __future__ import annotations

import html as html_lib
import json
import re
from html.parser import HTMLParser
from typing import Any

import numpy as np

from core.ocr.base import EngineOutput, OcrEngine
from core.ocr.scripts import detect_script, order_lines
from core.ocr.types import OcrError, OcrLine, Table

PROMPTS = {
    "text": "Read all the text in the image. Output only the text, line by line, in reading order.",
    "markdown": "qwenvl markdown",
    "boxes": "Spotting all the text in the image with line-level, and output in JSON format as "
             '[{"bbox_2d": [x1, y1, x2, y2], "text_content": "..."}].',
}


def parse_boxes(text: str, width: int, height: int) -> list[OcrLine]:
    """Lines from Qwen3-VL's JSON grounding output; bbox_2d is 0-1000 relative, mapped to pixels."""
    m = re.search(r"\[\s*\{.*\}\s*\]", text, flags=re.S)
    if not m:
        return []
    try:
        items = json.loads(m.group(0))
    except json.JSONDecodeError:
        return []
    lines = []
    for it in items if isinstance(items, list) else []:
        if not isinstance(it, dict):
            continue
        box, content = it.get("bbox_2d"), it.get("text_content", it.get("text"))
        if not (isinstance(box, list) and len(box) == 4 and isinstance(content, str) and content.strip()):
            continue
        try:
            x1, y1, x2, y2 = (float(v) for v in box)
        except (TypeError, ValueError):
            continue
        x1, x2 = sorted((x1 * width / 1000, x2 * width / 1000))
        y1, y2 = sorted((y1 * height / 1000, y2 * height / 1000))
        lines.append(OcrLine(content.strip(), [[x1, y1], [x2, y1], [x2, y2], [x1, y2]], 1.0))
    return lines


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
            span = int(dict(attrs).get("colspan") or 1) if str(dict(attrs).get("colspan") or "1").isdigit() else 1
            self._span = span

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self.tables[-1][-1].extend([""] * (self._span - 1))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse_html_tables(text: str, page: int = 0) -> list[Table]:
    """Tables from the model's HTML output, as cell grids (text unescaped; exports escape again)."""
    parser = _TableParser()
    try:
        parser.feed(text)
    except Exception:  # noqa: BLE001 - malformed model output just means "no table"
        return []
    return [Table(page, "vlm", [0, 0, 0, 0], [r for r in t if r]) for t in parser.tables if any(t)]


def usable(text: str) -> bool:
    """False for output that is clearly noise (few letters, or one token repeated)."""
    import unicodedata

    letters = [ch for ch in text if ch.isalnum()]
    if len(letters) < 1:
        return False
    bad = sum(1 for ch in text if ch == "\ufffd" or (unicodedata.category(ch) in ("Cc", "Co", "Cn", "Cs")
                                                       and ch not in "\n\t\r"))
    if bad > 0.02 * len(text):
        return False  # replacement or control characters: decoded noise
    words = text.split()
    if len(words) >= 8 and len(set(words)) <= 2:
        return False
    return detect_script(text) != ""


class VlmOcrEngine(OcrEngine):
    """Qwen3-VL reading through the core.vlm `Engine` it is given (its weights load on its first request)."""

    name = "vlm"

    def __init__(self, engine: Any, model: str = "", mode: str = "boxes", max_new_tokens: int = 1024) -> None:
        self.engine = engine
        self.model = model
        self.mode = mode
        self.max_new_tokens = max_new_tokens

    def available(self) -> bool:
        """True unless the engine already failed to load."""
        try:
            return not self.engine.info().error
        except Exception:  # noqa: BLE001 - an engine that cannot even report is not available
            return False

    def languages(self) -> list[str]:
        """Qwen3-VL reads many languages; no fixed list."""
        return ["any"]

    def version(self) -> str:
        """The model name (part of cache keys: another model reads again)."""
        return f"vlm:{self.model or 'engine'}"

    def read(self, image: np.ndarray, lang: str | None = None, vertical: bool | None = None,
             mode: str | None = None) -> EngineOutput:
        """Ask the model to read the image; boxes mode maps 0-1000 coordinates to pixels."""
        from core.vlm import EngineError, GenerationParams, ImagePart, user

        mode = mode or self.mode
        if mode not in PROMPTS:
            raise OcrError(f"unknown VLM OCR mode {mode!r}; choose text, markdown or boxes")
        h, w = image.shape[:2]
        try:
            res = self.engine.generate([user(ImagePart(image), PROMPTS[mode])],
                                       GenerationParams.greedy_defaults(self.max_new_tokens), kind="ocr")
        except EngineError as exc:
            raise OcrError(f"The Qwen3-VL engine failed: {exc}", "Use --engine rapidocr or tesseract.") from exc
        text = res.text or ""
        out = EngineOutput([], self.name, lang or "", "", bool(vertical), tables=parse_html_tables(text))
        if mode == "boxes":
            out.lines = parse_boxes(text, w, h)
        if not out.lines and usable(text):
            if mode == "text":
                rows = [html_lib.unescape(r).strip() for r in text.splitlines() if r.strip()]
            else:  # markup stripped: a table row's cells become one line, single-spaced
                plain = re.sub(r"<[^>]+>", " ", text)
                rows = [" ".join(html_lib.unescape(r).split()) for r in plain.splitlines() if r.strip()]
            step = h / max(len(rows), 1)
            out.lines = [OcrLine(r, [[0, i * step], [w, i * step], [w, (i + 1) * step], [0, (i + 1) * step]], 0.5)
                         for i, r in enumerate(rows)]
            if mode == "boxes" and rows:
                out.warnings.append("the model gave no boxes; lines are placed one under another")
        if not usable(" ".join(ln.text for ln in out.lines)):
            out.lines = []
            out.warnings.append("the model's output was not usable text (is the model a real, trained one?)")
        out.script = detect_script("".join(ln.text for ln in out.lines))
        out.lines = order_lines(out.lines, vertical=out.vertical) if mode == "boxes" else out.lines
        return out
