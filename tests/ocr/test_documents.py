"""Loading PDFs and images, bad input, tables, invoice fields, exports and the CLI, with real engines."""

from __future__ import annotations

import io
import json

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from core.ocr import OcrError, OcrOptions, ocr_image, run_ocr
from core.ocr.evaluate import cer
from core.ocr.exports import export, to_searchable_pdf
from core.ocr.loading import iter_pages, parse_pages
from core.ocr.tables import table_to_csv, table_to_html, table_to_markdown, tables_to_xlsx
from core.ocr.types import OcrResult, Table
from .conftest import ENGLISH, font, png_bytes, render_lines


def _pdf_from_images(images: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    pils = [Image.fromarray(a) for a in images]
    pils[0].save(buf, "PDF", save_all=True, append_images=pils[1:], resolution=100)
    return buf.getvalue()


def _text_pdf(text: str) -> bytes:
    """A PDF with a real text layer (standard Helvetica), made with pdfium."""
    import ctypes

    import pypdfium2.raw as raw

    pdf = pdfium.PdfDocument.new()
    page = pdf.new_page(400, 200)
    obj = raw.FPDFPageObj_NewTextObj(pdf.raw, b"Helvetica", 14.0)
    ws = (text + "\x00").encode("utf-16-le")
    raw.FPDFText_SetText(obj, ctypes.cast(ctypes.create_string_buffer(ws, len(ws)), ctypes.POINTER(raw.FPDF_WCHAR)))
    raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 20, 150)
    raw.FPDFPage_InsertObject(page.raw, obj)
    page.gen_content()
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def test_parse_pages():
    assert parse_pages("1-3,5", 10) == [0, 1, 2, 4]
    assert parse_pages(None, 3) == [0, 1, 2]
    assert parse_pages("8-", 9) == [7, 8]
    for bad in ("x", "0-2", "11", "3-1"):
        with pytest.raises(OcrError):
            parse_pages(bad, 10)


def test_pdf_pages_ranges_progress_and_searchable_pdf(english_page):
    second = render_lines(["Second page says hello"])
    data = _pdf_from_images([english_page, second, english_page])
    seen = []
    res = run_ocr(data, OcrOptions(pages="1-2", dpi=100), name="scan.pdf",
                  progress=lambda f, m="", s="": seen.append((f, m, s)))
    assert res.page_count == 3 and [p.index for p in res.pages] == [0, 1]
    assert seen[-1][0] == 1.0 and seen[-1][1].startswith("page 2 of 2") and seen[-1][2] == "ocr"
    assert cer(ENGLISH[0], res.pages[0].lines[0].text) < 0.05
    assert cer("Second page says hello", res.pages[1].text) < 0.05
    assert res.pages[0].source == "ocr"
    # searchable PDF: parse it back and find the text
    pdf_bytes = export(res, "pdf", data)
    doc = pdfium.PdfDocument(pdf_bytes)
    assert len(doc) == 2
    text = doc[1].get_textpage().get_text_range()
    assert "Second page" in text or cer("Second page says hello", text) < 0.1
    assert "quick brown" in doc[0].get_textpage().get_text_range()
    # JSON round trip
    back = OcrResult.from_dict(json.loads(export(res, "json")))
    assert back.pages[1].text == res.pages[1].text


def test_text_layer_is_used_and_said():
    res = run_ocr(_text_pdf("Quarterly report with a real text layer"), OcrOptions())
    page = res.pages[0]
    assert page.source == "text-layer" and "text layer" in page.warnings[0]
    assert "Quarterly report" in page.text


def test_image_formats_and_multipage_tiff(english_page):
    for fmt in ("JPEG", "WEBP", "BMP"):
        page = run_ocr(png_bytes(english_page, fmt)).pages[0]
        assert cer(ENGLISH[0], page.lines[0].text) < 0.05, fmt
    buf = io.BytesIO()
    second = render_lines(["Another frame"])
    Image.fromarray(english_page).save(buf, "TIFF", save_all=True, append_images=[Image.fromarray(second)])
    pages = list(iter_pages(buf.getvalue()))
    assert len(pages) == 2 and pages[1].image.shape == second.shape


def test_exif_orientation_and_transparency(english_page):
    # stored turned, with an EXIF tag saying "rotate 90 CW to display"
    img = Image.fromarray(english_page).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=95)
    page = run_ocr(buf.getvalue(), OcrOptions(preprocess={"orientation": "off"})).pages[0]
    assert cer(ENGLISH[0], page.lines[0].text) < 0.05
    rgba = np.zeros((*english_page.shape[:2], 4), np.uint8)
    rgba[..., 3] = 255 - english_page[..., 0]  # black text as alpha on a transparent background
    page = run_ocr(png_bytes(rgba)).pages[0]
    assert cer(ENGLISH[0], page.lines[0].text) < 0.05


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"not an image at all", "neither a PDF nor an image"),
    (b"%PDF-1.7\n1 0 obj broken", "PDF could not be opened"),
    (png_bytes(np.zeros((1, 1, 3), np.uint8)), "too small"),
])
def test_bad_input_gives_clear_errors(data, words):
    with pytest.raises(OcrError, match=words):
        run_ocr(data)


def test_decompression_bomb_refused():
    from core.settings import Settings

    big = png_bytes(np.full((400, 500, 3), 255, np.uint8))
    with pytest.raises(OcrError, match="decompression-bomb"):
        run_ocr(big, settings=Settings(max_image_pixels=100_000))


def test_truncated_image_and_encrypted_pdf(english_page, tmp_path):
    data = png_bytes(english_page)
    with pytest.raises(OcrError, match="damaged|truncated"):
        run_ocr(data[: len(data) // 2])
    # an encrypted PDF (password) made by hand with pdfium is not possible: use the trailer's /Encrypt marker
    enc = _pdf_from_images([english_page]).replace(b"trailer\n<<", b"trailer\n<< /Encrypt << /Filter /Standard "
                                                    b"/V 1 /R 2 /O <00> /U <00> /P -4 >>", 1)
    with pytest.raises(OcrError, match="encrypted|PDF could not be opened"):
        run_ocr(enc)


def test_page_limit_and_blank_page(english_page):
    blank = np.full((200, 300, 3), 255, np.uint8)
    data = _pdf_from_images([blank, english_page, blank])
    with pytest.raises(OcrError, match="page limit|above the limit"):
        run_ocr(data, OcrOptions(max_pages=2))
    res = run_ocr(data, OcrOptions(pages="1", dpi=72))
    assert res.pages[0].lines == [] and "blank" in res.pages[0].warnings[0]


def _ruled_table_image(rows: list[list[str]], cw: int = 170, ch: int = 56) -> np.ndarray:
    from PIL import ImageDraw

    f = font("latin", 24)
    w, h = cw * len(rows[0]) + 40, ch * len(rows) + 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    for r in range(len(rows) + 1):
        d.line([(20, 20 + r * ch), (20 + cw * len(rows[0]), 20 + r * ch)], fill="black", width=2)
    for c in range(len(rows[0]) + 1):
        d.line([(20 + c * cw, 20), (20 + c * cw, 20 + ch * len(rows))], fill="black", width=2)
    for r, row in enumerate(rows):
        for c, t in enumerate(row):
            d.text((32 + c * cw, 32 + r * ch), t, fill="black", font=f)
    return np.array(img)


TABLE = [["Item", "Qty", "Price"], ["Apples", "3", "4.50"], ["Pears", "12", "7.25"], ["Plums", "5", "1.10"]]


def test_ruled_table_cells_and_exports():
    page = ocr_image(_ruled_table_image(TABLE), OcrOptions(engine="rapidocr"))
    assert page.tables, page.text
    t = page.tables[0]
    assert t.kind == "ruled" and t.shape == (4, 3)
    assert t.rows == TABLE
    assert table_to_csv(t).splitlines()[1] == "Apples,3,4.50"
    assert "| Apples | 3 | 4.50 |" in table_to_markdown(t)
    from openpyxl import load_workbook

    wb = load_workbook(io.BytesIO(tables_to_xlsx([t])))
    assert wb.active["A2"].value == "Apples"


def test_unruled_table():
    lines = ["Name        Units      Cost", "Bolts       100        9.99", "Nuts        250        4.75",
             "Washers     500        2.10"]
    page = ocr_image(render_lines(lines, size=26, gap=0.9), OcrOptions(engine="rapidocr"))
    assert page.tables, page.text
    t = page.tables[0]
    assert t.kind == "unruled" and t.shape == (4, 3)
    assert t.rows[2] == ["Nuts", "250", "4.75"]


def test_html_export_escapes_cell_text():
    t = Table(0, "ruled", [0, 0, 1, 1], [["<script>alert(1)</script>", "a & b"]])
    out = table_to_html(t)
    assert "<script>" not in out and "&lt;script&gt;" in out and "a &amp; b" in out
    res = OcrResult("x<y>.png", "h", [])
    assert b"<y>" not in export(res, "html") and b"<y>" not in export(res, "md")


def test_invoice_fields_and_checks():
    lines = ["ACME Tools Ltd", "Invoice No: INV-2024-0042", "Invoice Date: 14 March 2024", "VAT No: GB123456789",
             "Hammer            2     30.00", "Screwdriver set   1     45.50", "Subtotal              75.50",
             "VAT 20%               15.10", "Total                 EUR 90.60"]
    res = run_ocr(png_bytes(render_lines(lines, size=24, gap=0.7)), OcrOptions(engine="rapidocr", tables=False))
    f = res.fields
    assert f is not None, res.text
    assert f.vendor == "ACME Tools Ltd"
    assert f.invoice_number == "INV-2024-0042"
    assert f.date == "2024-03-14"
    assert (f.subtotal, f.tax, f.total) == (75.50, 15.10, 90.60)
    assert f.currency == "EUR" and f.tax_id == "GB123456789"
    assert [li.amount for li in f.line_items] == [30.00, 45.50]
    assert f.checks == {"date_valid": True, "subtotal_plus_tax_equals_total": True,
                        "line_items_plus_tax_equal_total": True}
    assert "total" in export(res, "csv").decode()


def test_invoice_flags_what_does_not_add_up():
    from core.ocr.invoice import extract_fields
    from core.ocr.types import OcrLine

    rows = ["Shop Invoice", "Date: 2024-02-30", "Subtotal 10.00", "Tax 1.00", "Total 20.00"]
    lines = [OcrLine(t, [[0, i * 40], [300, i * 40], [300, i * 40 + 30], [0, i * 40 + 30]], 1.0)
             for i, t in enumerate(rows)]
    f = extract_fields(lines)
    assert f.checks["subtotal_plus_tax_equals_total"] is False and f.flags
    assert f.checks.get("date_valid") is False


def test_searchable_pdf_any_script():
    from core.ocr.types import OcrLine, OcrPage

    img = np.full((200, 600, 3), 255, np.uint8)
    page = OcrPage(0, 600, 200, [OcrLine("我是中国人 Hello", [[10, 10], [300, 10], [300, 50], [10, 50]], 0.9),
                                 OcrLine("आज मौसम", [[10, 100], [300, 100], [300, 140], [10, 140]], 0.9)])
    pdf = to_searchable_pdf(OcrResult("x", "h", [page]), [img])
    text = pdfium.PdfDocument(pdf)[0].get_textpage().get_text_range()
    assert "我是中国人" in text and "Hello" in text and "आज" in text


def test_cli_ocr_json_and_errors(tmp_path, english_page, capsys, monkeypatch):
    from core.cli import main

    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "page.png"
    path.write_bytes(png_bytes(english_page))
    assert main(["ocr", str(path), "--format", "json", "-q"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pages"][0]["lines"][0]["text"].startswith("The quick")
    assert "box" in data["pages"][0]["lines"][0] and "confidence" in data["pages"][0]["lines"][0]
    # second run comes from the cache
    assert main(["ocr", str(path), "--format", "txt", "-q"]) == 0
    assert "quick brown" in capsys.readouterr().out
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4 garbage")
    assert main(["ocr", str(bad)]) == 1
    assert "PDF could not be opened" in capsys.readouterr().err
    out = tmp_path / "o.pdf"
    assert main(["ocr", str(path), "--format", "pdf", "-o", str(out), "-q"]) == 0
    assert "quick brown" in pdfium.PdfDocument(out.read_bytes())[0].get_textpage().get_text_range()
