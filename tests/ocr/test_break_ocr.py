"""Break-test defects of OCR and its exports (issue 12): sparse pages, bounded heavy work, CSV formula
injection, 0-page PDFs. Real engines, real files made here."""

from __future__ import annotations

import csv
import io
import threading
import time

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw

from core.errors import Busy, UserError
from core.limits import GIB, HeavyWork, heavy_work, reset_heavy_work
from core.ocr import OcrError, OcrOptions, ocr_image, run_ocr
from core.ocr.evaluate import cer
from core.ocr.exports import export
from core.ocr.loading import count_pages, ocr_bytes
from core.ocr.types import InvoiceFields, OcrBusy, OcrLine, OcrPage, OcrResult, Table
from core.settings import Settings
from .conftest import ENGLISH, font, need_tesseract, png_bytes

LINE = "The quick brown fox jumps over the lazy dog."


def _a4_one_line(text: str = LINE, size: int = 40) -> np.ndarray:
    """One line of black text on an otherwise white A4 page at 300 DPI (2480x3508): under 0.1 % ink."""
    img = Image.new("RGB", (2480, 3508), "white")
    ImageDraw.Draw(img).text((200, 300), text, fill="black", font=font("latin", size))
    return np.array(img)


# ---- D1: sparse pages ------------------------------------------------------------------------------------------

def test_break1_sparse_page_is_read_and_dense_page_still_reads(english_page):
    page_img = _a4_one_line()
    assert (page_img[:, :, 0] < 128).mean() < 0.005  # the sparse case of the report
    res = run_ocr(png_bytes(page_img), OcrOptions(engine="rapidocr"), name="sparse.png")
    [page] = res.pages
    assert cer(LINE, page.text) < 0.03, page.text
    assert "contrast" in page.preprocess.steps  # the stretch ran, and no longer turned the page black
    # the line's box is where it was drawn (original page pixels)
    x0, y0, x1, y1 = page.lines[0].bounds
    assert 170 < x0 < 220 and 270 < y0 < 320 and x1 > 1000
    dense = ocr_image(english_page, OcrOptions(engine="rapidocr"))
    assert cer("\n".join(ENGLISH), dense.text) < 0.02, dense.text


def test_break1_sparse_page_with_tesseract():
    need_tesseract("eng")
    page = ocr_image(_a4_one_line(), OcrOptions(engine="tesseract", lang="en"))
    assert cer(LINE, page.text) < 0.03, page.text


# ---- D3: heavy work is bounded ---------------------------------------------------------------------------------

def test_break3_heavy_work_fair_oversized_alone_and_timeout_message():
    hw = HeavyWork(100, timeout_s=5)
    order: list[str] = []
    first = threading.Event()
    release = threading.Event()

    def job(name: str, n: int) -> None:
        with hw.hold(n, name):
            order.append(name)
            if name == "big":
                first.set()
                release.wait(5)

    big = threading.Thread(target=job, args=("big", 10**6))  # larger than the whole budget: runs, alone
    big.start()
    assert first.wait(5)
    assert hw.stats().held_bytes == 100 and hw.stats().running == 1
    waiters = []
    for name, n in (("a", 60), ("tiny", 1), ("b", 60)):
        t = threading.Thread(target=job, args=(name, n))
        t.start()
        waiters.append(t)
        deadline = time.monotonic() + 5
        while hw.stats().waiting < len(waiters) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert hw.stats().waiting == 3 and order == ["big"]  # nothing runs next to the oversized job
    release.set()
    for t in [big, *waiters]:
        t.join(5)
    # first come, first served: "tiny" would fit next to "a" but does not overtake it
    assert order == ["big", "a", "tiny", "b"]
    assert hw.stats() == type(hw.stats())(100, 0, 0, 0)

    raised: list[BaseException] = []

    def other_request() -> None:  # another thread: a hold inside a hold of the same thread costs nothing
        try:
            with hw.hold(30, "OCR of scan.png", timeout_s=0.05):
                pass
        except Busy as exc:
            raised.append(exc)

    with hw.hold(80, "first"):
        t = threading.Thread(target=other_request)
        t.start()
        t.join(5)
    msg = str(raised[0])
    assert "busy" in msg and "OCR of scan.png" in msg and "Try again" in msg
    assert isinstance(raised[0], UserError)


@pytest.fixture
def tiny_bound():
    """Settings whose heavy-work budget (1 MiB) is smaller than any OCR run, so runs go one at a time."""

    def make(timeout_s: float) -> Settings:
        reset_heavy_work()
        settings = Settings(heavy_work_memory_gb=1 / 1024, busy_timeout_s=timeout_s)
        assert heavy_work(settings).capacity == 1024**2
        return settings

    yield make
    reset_heavy_work()


def test_break3_two_ocr_runs_of_a_large_page_run_one_at_a_time(tiny_bound):
    settings = tiny_bound(60.0)
    data = png_bytes(_a4_one_line())
    spans: dict[str, list[float]] = {}
    called: dict[str, float] = {}
    results: dict[str, OcrResult] = {}
    started = threading.Event()

    def run(name: str) -> None:
        def progress(done: int, total: int, message: str) -> None:
            spans.setdefault(name, []).append(time.monotonic())
            started.set()

        called[name] = time.monotonic()
        results[name] = run_ocr(data, OcrOptions(engine="rapidocr"), name=name, settings=settings,
                                progress=progress)

    one = threading.Thread(target=run, args=("one",))
    one.start()
    assert started.wait(60)
    assert heavy_work(settings).stats().running == 1
    two = threading.Thread(target=run, args=("two",))
    two.start()
    one.join(120)
    two.join(120)
    assert cer(LINE, results["one"].text) < 0.03 and cer(LINE, results["two"].text) < 0.03
    (s1, e1), (s2, e2) = (spans["one"][0], spans["one"][-1]), (spans["two"][0], spans["two"][-1])
    assert called["two"] < e1  # the second asked while the first was reading ...
    assert s1 < e1 <= s2 < e2  # ... and started only after it: at most one run at a time
    assert heavy_work(settings).stats().held_bytes == 0


def test_break3_second_run_refused_busy_with_zero_timeout(tiny_bound):
    settings = tiny_bound(0.0)
    data = png_bytes(_a4_one_line())
    started, done = threading.Event(), threading.Event()
    out: dict[str, OcrResult] = {}

    def first() -> None:
        out["r"] = run_ocr(data, OcrOptions(engine="rapidocr"), settings=settings,
                           progress=lambda *a: started.set())
        done.set()

    t = threading.Thread(target=first)
    t.start()
    assert started.wait(60)
    assert not done.is_set()
    with pytest.raises(OcrBusy) as err:
        run_ocr(data, OcrOptions(engine="rapidocr"), name="second.png", settings=settings)
    msg = str(err.value)
    assert "busy" in msg.lower() and "try again" in msg.lower() and "OCR of second.png" in msg
    assert isinstance(err.value, OcrError) and isinstance(err.value, Busy)  # every front end shows it as text
    t.join(120)
    assert cer(LINE, out["r"].text) < 0.03  # the first run was not disturbed


def test_break3_estimate_from_header_and_huge_image_is_shrunk(tiny_bound):
    # the report's case: a PNG just under the pixel guard (~179 Mpx) cost 5.4 GB; the estimate (and, as
    # measured, the real peak of ~1.8 GB) is now bounded by decoding, not by full-size float copies
    assert ocr_bytes(178_000_000) < 2.0 * GIB
    settings = tiny_bound(60.0)
    img = Image.new("RGB", (8000, 6000), "white")  # 48 Mpx: above MAX_OCR_PIXELS
    f = font("latin", 120)
    ImageDraw.Draw(img).text((1000, 2000), "Harbour lights at dusk", fill="black", font=f)
    left, top, right, bottom = (a + b for a, b in zip(f.getbbox("Harbour lights at dusk"), (1000, 2000, 1000, 2000)))
    res = run_ocr(png_bytes(np.array(img)), OcrOptions(engine="rapidocr"), settings=settings)
    [page] = res.pages
    assert "downscale" in page.preprocess.steps and (page.width, page.height) == (8000, 6000)
    assert cer("Harbour lights at dusk", page.text) < 0.05, page.text
    x0, y0, x1, y1 = page.lines[0].bounds  # boxes are in the original page's pixels
    assert all(abs(a - b) < 60 for a, b in zip((x0, y0, x1, y1), (left, top, right, bottom))), (page.lines[0].bounds,
                                                                                             (left, top, right, bottom))


# ---- D9: CSV formula injection ---------------------------------------------------------------------------------

DANGEROUS = ['=HYPERLINK("http://evil.example","x")', "@SUM(A1:A2)", "+cmd|' /C calc'!A0", "-1+1",
             "\tTAB=1", "\rCR=1"]
KEPT = ["-12.50", "-1,234.56", "+3", "plain text", "a=b"]


def _read_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def test_break9_csv_export_escapes_formulas_and_keeps_numbers():
    texts = DANGEROUS + KEPT
    lines = [OcrLine(t, [[0, i * 10], [50, i * 10], [50, i * 10 + 8], [0, i * 10 + 8]], 0.9) for i, t in enumerate(texts)]
    res = OcrResult("x.png", "h", [OcrPage(0, 100, 200, lines)], 1)
    rows = _read_csv(export(res, "csv"))
    assert rows[0] == ["page", "line", "text", "confidence", "box"]
    assert [r[2] for r in rows[1:]] == ["'" + t for t in DANGEROUS] + KEPT
    assert [r[1] for r in rows[1:3]] == ["1", "2"]

    table = Table(0, "ruled", [0, 0, 10, 10], [["item", "amount"], ['=HYPERLINK("x")', "-12.50"], ["@SUM(A1)", "-1+1"]])
    res_t = OcrResult("t.png", "h", [OcrPage(0, 100, 100, [], tables=[table])], 1)
    rows = _read_csv(export(res_t, "csv"))
    assert rows[1:] == [["item", "amount"], ["'=HYPERLINK(\"x\")", "-12.50"], ["'@SUM(A1)", "'-1+1"]]

    fields = InvoiceFields(vendor="=cmd()", invoice_number="-2+3", total=-12.5)
    res_f = OcrResult("f.png", "h", [OcrPage(0, 10, 10, [])], 1, fields=fields)
    rows = dict((r[0], r[1]) for r in _read_csv(export(res_f, "csv")) if len(r) == 2)
    assert rows["vendor"] == "'=cmd()" and rows["invoice_number"] == "'-2+3" and rows["total"] == "-12.5"


# ---- D12b: a PDF without pages ---------------------------------------------------------------------------------

def test_break12b_zero_page_pdf_says_it_has_no_pages(tmp_path):
    buf = io.BytesIO()
    pdfium.PdfDocument.new().save(buf)  # a valid PDF whose page tree is empty
    data = buf.getvalue()
    assert b"/Count 0" in data
    path = tmp_path / "empty.pdf"
    path.write_bytes(data)
    for call in (lambda: run_ocr(path), lambda: count_pages(data)):
        with pytest.raises(OcrError) as err:
            call()
        msg = str(err.value)
        assert msg.startswith("the PDF has no pages") and "export it again" in msg
        assert "Success" not in msg
        assert isinstance(err.value, UserError)


# ---- issue 13: one application layer: the model's tables, one RapidOCR, no settings from the environment ------

TABLE_HTML = ("<table>\n<tr><th>Item</th><th>Amount</th></tr>\n<tr><td>Coffee</td><td>3.50</td></tr>\n"
              "<tr><td>Tea &amp; cake</td><td>6.20</td></tr>\n</table>")


def test_break13_tables_the_model_reads_reach_the_page(tiny_engine):
    """The Qwen3-VL engine parsed the model's HTML tables into `last_tables`, which nothing read: the page got
    none. The real tiny-model engine runs the request (its ledger shows it); its answer is replaced by a fixed
    table, as the thing under test is the OCR plumbing, not the random model."""
    from dataclasses import replace

    from core.ocr.registry import OcrRegistry
    from core.vlm import Engine, GenerationParams

    class TableAnswers(Engine):
        def __init__(self, real: Engine) -> None:
            self.real, self.ledger = real, real.ledger

        def info(self):
            return self.real.info()

        def stream(self, messages, params=None, kind="chat"):
            return self.real.stream(messages, params, kind=kind)

        def generate(self, messages, params=None, kind="chat"):
            answer = self.real.generate(messages, GenerationParams.greedy_defaults(2), kind=kind)
            return replace(answer, text=TABLE_HTML)

    engines = OcrRegistry(Settings(), model_engine=lambda: TableAnswers(tiny_engine))
    before = len(tiny_engine.ledger.records())
    res = run_ocr(png_bytes(render_table_page()), OcrOptions(engine="vlm", fields="off"), engines=engines,
                  name="receipt.png")
    assert [t.rows for t in res.tables] == [[["Item", "Amount"], ["Coffee", "3.50"], ["Tea & cake", "6.20"]]]
    assert res.tables[0].page == 0 and res.tables[0].kind == "vlm"
    assert "Coffee 3.50" in res.text
    assert ["Coffee", "3.50"] in _read_csv(export(res, "csv"))  # the tables export
    assert [r.kind for r in tiny_engine.ledger.records()[before:]] == ["ocr"]


def render_table_page() -> np.ndarray:
    img = Image.new("RGB", (400, 160), "white")
    ImageDraw.Draw(img).text((20, 40), "Coffee 3.50   Tea 6.20", fill="black", font=font("latin", 24))
    return np.array(img)


def test_break13_one_rapidocr_serves_documents_and_video_text(english_page, monkeypatch):
    """Video text (core.media.text) kept a RapidOCR object of its own beside the OCR engine's: two copies of
    the models. Now one serves both, and a call of one never leaves the other with its steps (RapidOCR keeps
    which steps run from call to call)."""
    import rapidocr

    import core.ocr.rapid as rapid
    from core.media.text import ocr_lines
    from core.ocr.registry import OcrRegistry

    made: list[object] = []
    real = rapidocr.RapidOCR

    def counting(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(rapidocr, "RapidOCR", counting)
    monkeypatch.setattr(rapid, "_instance", None)
    engine = OcrRegistry(Settings()).get("rapidocr")
    assert engine.detect(english_page)  # detection only: the shared object last ran without recognition
    video_text = [t for t, _, _ in ocr_lines(english_page)]
    assert video_text == ENGLISH
    assert [ln.text for ln in engine.read(english_page).lines] == ENGLISH
    assert len(made) == 1


def test_break13_ocr_reads_no_settings_from_the_environment(english_page, monkeypatch):
    """core/ocr re-read the settings from the environment when a call gave none (run_ocr_cached, the heavy-work
    bound, the model engine's availability): settings are passed down now, the defaults where none are given."""
    import core.settings
    from core.ocr import preview_preprocessing

    calls: list[object] = []
    monkeypatch.setattr(core.settings, "load_settings", lambda *a, **k: calls.append(a) or Settings())
    reset_heavy_work()
    try:
        page = ocr_image(english_page, OcrOptions(engine="rapidocr"))
        res = run_ocr(png_bytes(english_page), OcrOptions(engine="rapidocr", tables=False))
        steps = preview_preprocessing(png_bytes(english_page))
    finally:
        reset_heavy_work()
    assert [ln.text for ln in page.lines] == ENGLISH and res.text == "\n".join(ENGLISH)
    assert [s.name for s in steps]
    assert calls == []


def test_break12b_zero_page_pdf_after_another_pdf_error_still_says_no_pages(tmp_path):
    """PDFium's last error is process-wide: after a damaged PDF, an empty one must not be called damaged."""
    buf = io.BytesIO()
    pdfium.PdfDocument.new().save(buf)
    with pytest.raises(OcrError, match="could not be opened"):
        count_pages(b"%PDF-1.7\n garbage that is no PDF \n%%EOF")
    with pytest.raises(OcrError) as err:
        count_pages(buf.getvalue())
    assert str(err.value).startswith("the PDF has no pages")
