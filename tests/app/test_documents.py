"""The document service of the application layer (core/app/documents.py), as every front end uses it: OCR
through the runtime's cache, OCR with the model on the runtime's one engine, questions about pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from core.app import Runtime
from core.jobs import JobRegistry
from core.ocr import OcrOptions
from core.settings import Settings
from tests.ocr.conftest import font


@pytest.fixture
def invoice(tmp_path: Path) -> Path:
    image = Image.new("RGB", (900, 300), "white")
    ImageDraw.Draw(image).text((40, 100), "INVOICE 4711 TOTAL 99.50 EUR", fill="black", font=font("latin", 40))
    path = tmp_path / "invoice.png"
    image.save(path)
    return path


def test_read_goes_through_the_runtimes_cache(tmp_path: Path, invoice: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Runtime(Settings(cache_dir=tmp_path / "cache"), jobs=JobRegistry()) as rt:
        first = rt.documents.read(invoice, OcrOptions(engine="rapidocr"))
        assert "INVOICE 4711" in first.text and first.name == "invoice.png"
        import core.ocr.pipeline as pipeline

        def read_again(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a page already read was read again")

        monkeypatch.setattr(pipeline, "ocr_page_image", read_again)
        again = rt.documents.read(invoice.read_bytes(), OcrOptions(engine="rapidocr"), name="same.png")
        assert again.text == first.text and again.name == "same.png"


def test_break13_vlm_ocr_uses_the_runtimes_one_engine(tmp_path: Path, tiny_model_dir: Path, invoice: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: an OCR run with the model engine uses the dashboard's one engine (one load, its requests in
    the ledger). Before, the OCR engine made its own (a second copy of the weights, requests missing from the
    ledger the GPU page shows)."""
    import core.vlm
    from core.vlm import GenerationParams
    from core.vlm.local import LocalEngine

    created: list[Any] = []
    real_create = core.vlm.create_engine

    def counting_create(settings: Any = None) -> Any:
        engine = real_create(settings)
        created.append(engine)
        return engine

    loads: list[LocalEngine] = []
    real_load = LocalEngine._load

    def counting_load(self: LocalEngine) -> None:
        loads.append(self)
        real_load(self)

    monkeypatch.setattr(core.vlm, "create_engine", counting_create)
    monkeypatch.setattr(LocalEngine, "_load", counting_load)
    settings = Settings(model=str(tiny_model_dir), cache_dir=tmp_path / "cache", max_new_tokens=8)
    with Runtime(settings, jobs=JobRegistry()) as rt:
        rt.ocr.get("vlm").max_new_tokens = 16  # the tiny model writes noise: a short budget keeps the test quick
        boxes = rt.documents.read(invoice, OcrOptions(engine="vlm", fields="off"))
        text = rt.documents.read(invoice, OcrOptions(engine="vlm", vlm_mode="text", fields="off"))
        cached = rt.documents.read(invoice, OcrOptions(engine="vlm", fields="off"))  # from the cache: no request
        answer = rt.documents.ask(invoice, "What is the total?", ocr=True, params=GenerationParams.greedy_defaults(4))

        assert [p.engine for p in boxes.pages + text.pages] == ["vlm", "vlm"]
        assert [p.to_dict() for p in cached.pages] == [p.to_dict() for p in boxes.pages]
        assert answer.ocr_used and answer.ocr_chars >= 20 and answer.pages == [0]
        assert created == [rt.engine]  # one engine object in the whole run
        assert loads == [rt.engine] and rt.engine.info().loaded  # its weights loaded once
        records = rt.engine.ledger.records()
        assert [r.kind for r in records] == ["ocr", "ocr", "document-qa"]
        assert all(r.status in ("stop", "length") and r.visual_tokens > 0 for r in records)


def test_a_registry_without_the_model_says_how_to_read_with_it(invoice: Path) -> None:
    from core.ocr import OcrError, run_ocr

    with pytest.raises(OcrError, match="needs the application's model engine") as exc:
        run_ocr(invoice, OcrOptions(engine="vlm"))
    assert "vlscope ocr --engine vlm" in exc.value.fix and "rapidocr" in exc.value.fix
