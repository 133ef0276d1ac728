"""Vertical Japanese (tategaki) read in reading order: columns right to left, tiers top to bottom, the pages
of a spread right to left, ruby (furigana) kept out of the main text; `vertical on` on a horizontal page still
reads it. Real engines on pages rendered here with a Noto CJK font."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from core.ocr import OcrOptions, ocr_image
from core.ocr.evaluate import cer
from core.ocr.types import OcrLine
from core.ocr.vertical import order_vertical
from .conftest import render_lines

JP_FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"  # index 0: Japanese

TIER1 = ["吾輩は猫である名前はまだ無い", "どこで生れたかとんと見当がつかぬ", "何でも薄暗いじめじめした所で",
         "泣いていた事だけは記憶している"]
TIER2 = ["吾輩はここで始めて人間というものを見た", "しかもあとで聞くとそれは書生という", "人間中で一番獰悪な種族であったそうだ"]
RUBY = {(0, 0, 0): "わがはい", (1, 1, 12): "しょせい"}  # (tier, column, character) -> kana set beside it
RUBY_BASE = {"わがはい": "吾輩", "しょせい": "書生"}  # the characters each ruby gives the reading of


def _font(size: int) -> ImageFont.FreeTypeFont:
    if not Path(JP_FONT).exists():
        pytest.skip(f"font {JP_FONT} is missing (apt-get install fonts-noto-cjk)")
    return ImageFont.truetype(JP_FONT, size, index=0)


def vertical_page(tiers: list[list[str]], ruby: dict | None = None, size: int = 34, pad: int = 50) -> np.ndarray:
    """A tategaki page: each tier's columns right to left, tiers top to bottom, ruby in half-size kana right of
    the characters it reads."""
    f, rf = _font(size), _font(size // 2)
    step, colw = int(size * 1.1), int(size * 1.9)
    heights = [max(len(c) for c in t) * step for t in tiers]
    width = max(len(t) for t in tiers) * colw + 2 * pad
    height = sum(heights) + 2 * size * (len(tiers) - 1) + 2 * pad
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    y0 = pad
    for ti, tier in enumerate(tiers):
        for ci, col in enumerate(tier):
            x = width - pad - (ci + 1) * colw + (colw - size) // 2
            for ri, ch in enumerate(col):
                d.text((x, y0 + ri * step), ch, fill="black", font=f)
            for (t, c, k), kana in (ruby or {}).items():
                if (t, c) == (ti, ci):
                    for j, ch in enumerate(kana):
                        d.text((x + size + 2, y0 + k * step + j * (size // 2)), ch, fill="black", font=rf)
        y0 += heights[ti] + 2 * size
    return np.array(img)


@pytest.fixture(scope="module")
def two_tier_page() -> np.ndarray:
    return vertical_page([TIER1, TIER2], RUBY)


def test_tategaki_page_in_auto_reads_columns_right_to_left_tiers_top_to_bottom_ruby_apart(two_tier_page):
    page = ocr_image(two_tier_page, OcrOptions(tables=False))  # vertical="auto", no language hint
    assert page.vertical
    main = TIER1 + TIER2
    assert cer("".join(main), "".join(ln.text for ln in page.lines)) < 0.08, page.text
    # one line per column, in reading order: each line is the column it should be
    assert len(page.lines) == len(main), page.text
    assert [cer(ref, ln.text) < 0.25 for ref, ln in zip(main, page.lines)] == [True] * len(main), page.text
    # the ruby is not read into the columns, and is kept as an annotation of the column it stands beside
    assert "わがはい" not in page.text and "しょせい" not in page.text
    assert_ruby_annotations(page)


def assert_ruby_annotations(page) -> None:
    """Each ruby is an annotation of the page: its kana, the column (line) and the characters of it that it
    reads, and a box beside that column, within its height."""
    ruby = {a.text: a for a in page.annotations}
    assert set(ruby) == {"わがはい", "しょせい"} and {a.kind for a in page.annotations} == {"ruby"}
    assert {k: a.line for k, a in ruby.items()} == {"わがはい": 0, "しょせい": len(TIER1) + 1}
    assert {k: a.base for k, a in ruby.items()} == RUBY_BASE, page.annotations
    for a in ruby.values():
        line = page.lines[a.line]
        assert line.text[a.start:a.end] == a.base
        lx0, ly0, lx1, ly1 = line.bounds
        xs, ys = [p[0] for p in a.box], [p[1] for p in a.box]
        # right of the column (its centre past the column's right edge), not on it and not a column away
        assert min(xs) > (lx0 + lx1) / 2 and lx1 - 0.1 * (lx1 - lx0) < (min(xs) + max(xs)) / 2 < lx1 + (lx1 - lx0), \
            (a.box, line.box)
        assert ly0 - 5 <= min(ys) and max(ys) <= ly1 + 5, (a.box, line.box)


def test_ruby_annotations_survive_json_the_cache_and_the_exports(two_tier_page, tmp_path):
    from core.cache import ResultCache
    from core.ocr import run_ocr
    from core.ocr.exports import export
    from core.ocr.types import OcrResult

    from .conftest import png_bytes

    cache = ResultCache(tmp_path / "cache")
    options = OcrOptions(tables=False, fields="off")
    first = run_ocr(png_bytes(two_tier_page), options, cache=cache)
    again = run_ocr(png_bytes(two_tier_page), options, cache=cache)  # read back from the cache
    for result in (first, again, OcrResult.from_dict(json.loads(export(first, "json")))):
        page = result.pages[0]
        assert "わがはい" not in page.text and "しょせい" not in page.text
        assert_ruby_annotations(page)
    assert again.pages[0].annotations == first.pages[0].annotations
    md = export(first, "md").decode()
    assert "吾輩 (わがはい)" in md and "書生 (しょせい)" in md
    assert "わがはい" not in export(first, "txt").decode()


def test_two_page_spread_reads_the_right_page_first():
    right = vertical_page([TIER1[:2], TIER2[:2]])
    left = vertical_page([TIER1[2:], TIER2[2:]])
    h = max(right.shape[0], left.shape[0])
    fill = lambda a: np.vstack([a, np.full((h - a.shape[0], a.shape[1], 3), 255, np.uint8)])  # noqa: E731
    spread = np.hstack([fill(left), np.full((h, 90, 3), 255, np.uint8), fill(right)])
    page = ocr_image(spread, OcrOptions(tables=False, lang="ja"))
    order = TIER1[:2] + TIER2[:2] + TIER1[2:] + TIER2[2:]
    assert page.vertical and len(page.lines) == len(order), page.text
    assert cer("".join(order), "".join(ln.text for ln in page.lines)) < 0.08, page.text
    assert [ln.text[:3] for ln in page.lines] == [t[:3] for t in order]


def test_vertical_on_applied_to_a_horizontal_page_still_reads_it():
    lines = ["今日は良い天気です。", "明日も晴れるでしょう。", "吾輩は猫である。"]
    img = render_lines(lines, "cjk", 36)
    page = ocr_image(img, OcrOptions(tables=False, vertical="on"))
    assert not page.vertical
    assert [ln.text for ln in page.lines] == lines
    assert any("runs horizontally" in w for w in page.warnings), page.warnings


def _col(text: str, x0: float, y0: float, w: float = 40, pitch: float = 40) -> OcrLine:
    y1 = y0 + pitch * len(text)
    return OcrLine(text, [[x0, y0], [x0 + w, y0], [x0 + w, y1], [x0, y1]], 0.99, True)


def test_order_vertical_blocks_and_ruby_from_boxes():
    # a spread: right page (x 600-800) with two tiers, left page (x 100-300) with one; ruby beside a column
    lines = [
        _col("左頁一行目です", 240, 50), _col("上段二行目です", 640, 50), _col("上段一行目です", 720, 50),
        _col("下段一行目です", 720, 400), _col("下段二行目です", 640, 400), _col("左頁二行目です", 170, 50),
        _col("わがはい", 762, 50, w=18, pitch=20),
    ]
    vr = order_vertical(lines)
    assert [ln.text for ln in vr.lines] == ["上段一行目です", "上段二行目です", "下段一行目です", "下段二行目です",
                                            "左頁一行目です", "左頁二行目です"]
    assert [(r.text, vr.lines[r.base].text) for r in vr.ruby] == [("わがはい", "上段一行目です")]
    assert [vr.lines[r.base].text[r.start:r.end] for r in vr.ruby] == ["上段"]  # 4 kana of 20 px beside 2 of 40
    assert vr.blocks == 3
