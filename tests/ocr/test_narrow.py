"""Wide line crops recognised narrowed (issue 15, speed of a printed page): the real RapidOCR reads a Latin page the
same at 0.65 of each line's width as at full width; a Chinese line, whose narrowed reading is mostly CJK, is read
again at full width and comes out as the plain engine reads it; the document engine narrows, the plain call does not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.ocr import rapid
from core.ocr.engines import RapidOcrEngine

from .conftest import ENGLISH, render_lines

pytest.importorskip("rapidocr")


def _read(image: np.ndarray, narrow: float) -> list[str]:
    out = rapid.run_rapidocr(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), narrow=narrow)
    return [t.strip() for t in (out.txts or ())]


def test_needs_full_width_for_cjk_and_unsure_readings() -> None:
    assert rapid.needs_full_width("发票号码：12345", 0.99)
    assert rapid.needs_full_width("請求書 No. 88", 0.99)  # 3 of 9 letters are kana/Han
    assert not rapid.needs_full_width("Invoice No. 88 (請)", 0.99)  # 1 of 15: a Latin line
    assert not rapid.needs_full_width("The quick brown fox", 0.95)
    assert rapid.needs_full_width("The quick brown fox", 0.5)
    assert rapid.needs_full_width("   ", 0.99)


def test_a_latin_page_reads_the_same_narrowed(monkeypatch: pytest.MonkeyPatch) -> None:
    page = render_lines(ENGLISH * 2, size=30)
    widths: list[int] = []
    engine = rapid.shared_rapidocr()
    real = type(engine).recognize_txt

    def noting(self, crops):  # type: ignore[no-untyped-def]
        widths.extend(int(c.shape[1]) for c in crops)
        return real(self, crops)

    monkeypatch.setattr(type(engine), "recognize_txt", noting)
    plain = _read(page, 1.0)
    plain_widths = list(widths)
    widths.clear()
    narrow = _read(page, rapid.NARROW)
    assert plain == [line.strip() for line in ENGLISH * 2]
    assert narrow == plain
    assert sum(widths) < 0.72 * sum(plain_widths)  # every wide crop went in at 0.65 of its width, none again


def test_a_chinese_line_is_read_again_at_full_width() -> None:
    line = render_lines(["增值税专用发票开票日期二零二四年三月十五日"], kind="cjk", size=32)
    assert _read(line, rapid.NARROW) == _read(line, 1.0)
    assert "".join(_read(line, 1.0)) == "增值税专用发票开票日期二零二四年三月十五日"


def test_the_document_engine_narrows_and_the_plain_call_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[float] = []
    real = rapid.run_rapidocr

    def noting(*args, narrow: float = 1.0, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(narrow)
        return real(*args, narrow=narrow, **kwargs)

    monkeypatch.setattr("core.ocr.engines.run_rapidocr", noting)
    lines = RapidOcrEngine().read(render_lines(ENGLISH[:1], size=30))
    assert asked == [rapid.NARROW]
    assert " ".join(line.text for line in lines.lines).strip() == ENGLISH[0]
