"""Break-test defects of the library catalog (issue 12): thumbnails follow VLSCOPE_MAX_IMAGE_PIXELS."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core.ocr.loading as loading
from core.cache import ResultCache
from core.library import make_thumbnail, record_file, thumbnail_of
from core.settings import Settings


def _png(path: Path, w: int, h: int) -> Path:
    arr = np.full((h, w, 3), 255, np.uint8)
    arr[h // 3: h // 2, w // 4: 3 * w // 4] = (200, 30, 30)
    Image.fromarray(arr).save(path, "PNG")
    return path


@pytest.fixture
def decodes(monkeypatch) -> list[tuple[int, int]]:
    """Sizes of the images the loader actually decodes (the real decoder still runs)."""
    seen: list[tuple[int, int]] = []
    real = loading._to_rgb

    def spy(frame: Image.Image) -> np.ndarray:
        seen.append(frame.size)
        return real(frame)

    monkeypatch.setattr(loading, "_to_rgb", spy)
    return seen


def test_break11_thumbnail_respects_max_image_pixels(tmp_path: Path, decodes, caplog) -> None:
    big = _png(tmp_path / "big.png", 3000, 2000)  # 6 Mpx
    strict = Settings(max_image_pixels=1_000_000)
    with caplog.at_level(logging.WARNING, logger="core.library.catalog"):
        assert make_thumbnail(big, "image", settings=strict) is None
    assert decodes == []  # refused from the header, never decoded
    msg = caplog.text
    assert "big.png" in msg and "3000x2000 = 6,000,000 pixels" in msg and "limit of 1,000,000" in msg
    assert "VLSCOPE_MAX_IMAGE_PIXELS" in msg

    # the same file under a limit it fits: a real 240-pixel-wide JPEG
    thumb = make_thumbnail(big, "image", settings=Settings(max_image_pixels=10_000_000))
    assert thumb is not None and Image.open(io.BytesIO(thumb)).size == (240, 160)
    assert decodes == [(3000, 2000)]

    # record_file passes its settings on: the library keeps no thumbnail of the over-limit file
    cache = ResultCache(tmp_path / "cache")
    item = record_file(cache, "ab" * 32, "big.png", "image", str(big), big.stat().st_size, settings=strict)
    assert item.name == "big.png" and thumbnail_of(cache, "ab" * 32) is None
    assert decodes == [(3000, 2000)]
