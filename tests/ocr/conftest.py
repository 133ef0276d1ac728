"""OCR test fixtures: images rendered with PIL and Debian fonts, with known text."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

FONTS = {
    "latin": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "cjk": "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "arabic": "/usr/share/fonts/truetype/noto/NotoNaskhArabic-Regular.ttf",
    "arabic_sans": "/usr/share/fonts/truetype/noto/NotoSansArabic-Regular.ttf",
    "devanagari": "/usr/share/fonts/truetype/noto/NotoSansDevanagari-Regular.ttf",
}

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Invoice totals are checked against line items.",
    "Pack my box with five dozen liquor jugs.",
]


def font(kind: str, size: int) -> ImageFont.FreeTypeFont:
    path = FONTS[kind]
    if not Path(path).exists():
        pytest.skip(f"font {path} is missing (apt-get install fonts-noto-core fonts-noto-cjk fonts-dejavu-core)")
    index = 2 if path.endswith(".ttc") else 0  # NotoSansCJK: 2 = Simplified Chinese
    return ImageFont.truetype(path, size, index=index)


def render_lines(lines: list[str], kind: str = "latin", size: int = 30, pad: int = 30, gap: float = 0.6,
                 direction: str | None = None) -> np.ndarray:
    """Black text on white, one line per entry."""
    f = font(kind, size)
    widths = [f.getbbox(t, direction=direction)[2] for t in lines] if direction else [f.getbbox(t)[2] for t in lines]
    w = max(widths) + 2 * pad
    step = int(size * (1 + gap))
    h = step * len(lines) + 2 * pad
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    for i, t in enumerate(lines):
        kwargs = {"direction": direction} if direction else {}
        d.text((pad, pad + i * step), t, fill="black", font=f, **kwargs)
    return np.array(img)


def render_vertical(columns: list[str], size: int = 34, pad: int = 30) -> np.ndarray:
    """Vertical CJK: each string is a column, top to bottom, columns placed right to left."""
    f = font("cjk", size)
    step = int(size * 1.15)
    colw = int(size * 1.8)
    h = max(len(c) for c in columns) * step + 2 * pad
    w = colw * len(columns) + 2 * pad
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    for ci, col in enumerate(columns):
        x = w - pad - (ci + 1) * colw + (colw - size) // 2
        for ri, ch in enumerate(col):
            d.text((x, pad + ri * step), ch, fill="black", font=f)
    return np.array(img)


def png_bytes(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def rotate(arr: np.ndarray, angle: float) -> np.ndarray:
    """Rotate counter-clockwise by angle degrees on a white, enlarged canvas."""
    return np.array(Image.fromarray(arr).rotate(angle, expand=True, fillcolor="white", resample=Image.BICUBIC))


def dim(arr: np.ndarray, factor: float = 0.25) -> np.ndarray:
    return (arr.astype(np.float32) * factor).astype(np.uint8)


def noisy(arr: np.ndarray, sigma: float = 25, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(arr.astype(np.float32) + rng.normal(0, sigma, arr.shape), 0, 255).astype(np.uint8)


def need_tesseract(*packs: str) -> None:
    from core.ocr.engines import tesseract_languages

    if not shutil.which("tesseract"):
        pytest.skip("tesseract is not installed (apt-get install tesseract-ocr)")
    missing = [p for p in packs if p not in tesseract_languages()]
    if missing:
        pytest.skip(f"tesseract packs missing: {missing} (apt-get install tesseract-ocr-<pack>)")


@pytest.fixture(scope="session")
def english_page() -> np.ndarray:
    return render_lines(ENGLISH)
