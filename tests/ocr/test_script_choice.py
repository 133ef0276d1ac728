"""Which script a line without a hint is read in, when RapidOCR cannot read it (core.ocr.pipeline._find_script).

The four readings below are what tesseract 5 gave, pack by pack, on a printed Sanskrit line of the public
sanPlusMinus set (Shreeshrii/tesstrain-sanPlusMinus, SSM-p022_16_0: "2  श्रीशिवनाममञ्जरी"): the Arabic pack
turned it into digits and one letter, 0.612 confident, a hair above the right reading (0.600). VLScope chose
the Arabic reading and returned "774 ا 2" where tesseract with the Sanskrit pack reads the line exactly (CER
1.0 against 0.0). The engine is replaced by those recorded readings so the rule itself is what is tested."""

from __future__ import annotations

import core.ocr.pipeline as P
from core.ocr.base import EngineOutput
from core.ocr.preprocess import analyse_layout
from core.ocr.types import OcrLine

BOX = [(0.0, 0.0), (250.0, 0.0), (250.0, 25.0), (0.0, 25.0)]
RECORDED = {  # pack -> (text, script, confidence) as tesseract read the line
    "ara": ("774 ا 2", "Arabic", 0.612),
    "san+hin": ("2 श्रीशिवनाममञ्जरी", "Devanagari", 0.600),
    "rus": ("2 Эа", "Cyrillic", 0.471),
    "eng": ("2 frat", "Latin", 0.511),
}


def _line_image():
    from .conftest import render_lines

    return render_lines(["2    sivanama manjari"], size=20, pad=4)  # one line of ink, no Devanagari headline


def test_a_pack_that_reads_digits_and_one_letter_does_not_win_the_line(monkeypatch) -> None:
    def once(tess, image, layout, lang, pack, vertical):
        text, script, conf = RECORDED[pack]
        return EngineOutput([OcrLine(text, BOX, conf)], "tesseract", script=script, pack=pack)

    monkeypatch.setattr(P, "_tess_once", once)
    monkeypatch.setattr(P, "_tess_line", lambda *a, first=None, **k: first)
    monkeypatch.setattr(P, "tesseract_languages", lambda: ["ara", "san", "hin", "rus", "eng"])
    image = _line_image()
    layout = analyse_layout(image)
    assert layout.mode == "line"
    found = P._find_script(object(), image, layout, None, EngineOutput([], "rapidocr"))
    assert found is not None and found.script == "Devanagari"
    assert found.lines[0].text == "2 श्रीशिवनाममञ्जरी"


def test_letters_of_the_script_are_counted_not_digits() -> None:
    out = EngineOutput([OcrLine("774 ا 2", BOX, 0.6)], "tesseract", script="Arabic")
    assert P._letters_in(out, "Arabic") == 1
    out = EngineOutput([OcrLine("مرحبا بالعالم 2026", BOX, 0.9)], "tesseract", script="Arabic")
    assert P._letters_in(out, "Arabic") == 12 and P._letters_in(out, "Latin") == 0
