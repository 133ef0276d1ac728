"""PDF text layers read as lines and words (core.ocr.textlayer through core.ocr.loading), on PDFs made here:
glyphs drawn one text object each, a page with /Rotate 90, text drawn turned, and garbage layers."""

from __future__ import annotations

import ctypes
import io

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as raw

from core.ocr.loading import iter_pages
from core.ocr.pipeline import OcrOptions, run_ocr
from core.ocr.textlayer import read_layer


def _text_obj(pdf, text: str, size: float):
    obj = raw.FPDFPageObj_NewTextObj(pdf.raw, b"Helvetica", size)
    ws = (text + "\x00").encode("utf-16-le")
    raw.FPDFText_SetText(obj, ctypes.cast(ctypes.create_string_buffer(ws, len(ws)), ctypes.POINTER(raw.FPDF_WCHAR)))
    return obj


def _advances(text: str, size: float) -> list[float]:
    """Where each character of `text` starts along its line in Helvetica (measured with PDFium)."""
    doc = pdfium.PdfDocument.new()
    page = doc.new_page(2000, 100)
    obj = _text_obj(doc, text, size)
    raw.FPDFPageObj_Transform(obj, 1, 0, 0, 1, 0, 50)
    raw.FPDFPage_InsertObject(page.raw, obj)
    page.gen_content()
    tp = page.get_textpage()
    out = []
    for i in range(tp.count_chars()):
        x, y = ctypes.c_double(), ctypes.c_double()
        raw.FPDFText_GetCharOrigin(tp, i, ctypes.byref(x), ctypes.byref(y))
        out.append(x.value)
    return out[:len(text)]


def put(pdf, page, text: str, x: float, y: float, size: float = 12.0, m=(1, 0, 0, 1), per_glyph: bool = False):
    """Draw `text` at (x, y) with text matrix m; per_glyph draws every glyph as a text object of its own, at
    its real advance (as the generators of the invoices that read one glyph per line do)."""
    if not per_glyph:
        obj = _text_obj(pdf, text, size)
        raw.FPDFPageObj_Transform(obj, m[0], m[1], m[2], m[3], x, y)
        raw.FPDFPage_InsertObject(page.raw, obj)
        return
    for ch, adv in zip(text, _advances(text, size)):
        if ch != " ":
            put(pdf, page, ch, x + m[0] * adv, y + m[1] * adv, size, m)


def save(pdf) -> bytes:
    buf = io.BytesIO()
    pdf.save(buf)
    return buf.getvalue()


INVOICE = ["ACME Tools Ltd", "Invoice No: INV-2024-0042", "Hammer 2 30.00", "Total EUR 90.60"]
TABLE = [["Item", "Qty", "Price"], ["Hammer", "2", "30.00"], ["Saw", "1", "45.50"]]


def _rows(lines) -> list[list[str]]:
    """Lines grouped into rows by their vertical centre, each row left to right."""
    rows: list[list] = []
    for ln in sorted(lines, key=lambda ln: (ln.bounds[1] + ln.bounds[3]) / 2):
        c = (ln.bounds[1] + ln.bounds[3]) / 2
        if rows and abs(c - rows[-1][0]) < 8:
            rows[-1][1].append(ln)
        else:
            rows.append([c, [ln]])
    return [[ln.text for ln in sorted(r, key=lambda ln: ln.bounds[0])] for _, r in rows]


def test_glyphs_drawn_one_by_one_read_as_lines_in_order():
    pdf = pdfium.PdfDocument.new()
    page = pdf.new_page(400, 300)
    for i, t in enumerate(INVOICE):
        put(pdf, page, t, 30, 260 - 30 * i, per_glyph=True)
    page.gen_content()
    data = save(pdf)
    layer = read_layer(pdfium.PdfDocument(data)[0], 2.0)
    assert [ln.text for ln in layer.lines] == INVOICE
    assert layer.usable and layer.stats()["one_char_lines"] == 0
    assert [w.text for w in layer.words][:4] == ["ACME", "Tools", "Ltd", "Invoice"]
    # PDFium's own text rectangles give one "line" per glyph on this page
    tp = pdfium.PdfDocument(data)[0].get_textpage()
    assert tp.count_rects() >= 40
    page0 = next(iter_pages(data, dpi=144))
    assert [ln.text for ln in page0.text_layer] == INVOICE and page0.warnings == []
    # the boxes sit on the ink of the rendered page
    x0, y0, x1, y1 = (int(v) for v in page0.text_layer[0].bounds)
    assert (page0.image[y0:y1, x0:x1] < 128).any() and (page0.image[y0 - 12:y0 - 1, x0:x1] > 200).all()


def test_rotated_page_reads_its_table_upright_not_transposed():
    pdf = pdfium.PdfDocument.new()
    page = pdf.new_page(300, 400)  # portrait media box shown as landscape (/Rotate 90)
    for r, row in enumerate(TABLE):
        for c, cell in enumerate(row):
            # drawn turned in user space, so that the page turned 90 degrees clockwise shows it upright
            put(pdf, page, cell, 60 + 30 * r, 40 + 120 * c, m=(0, 1, -1, 0), per_glyph=True)
    page.set_rotation(90)
    page.gen_content()
    data = save(pdf)
    pg = next(iter_pages(data, dpi=144))
    h, w = pg.image.shape[:2]
    assert w > h  # rendered landscape, as a viewer shows it
    assert _rows(pg.text_layer) == TABLE
    for ln in pg.text_layer:  # every cell wider than high: rows stay rows
        x0, y0, x1, y1 = ln.bounds
        assert x1 - x0 > y1 - y0 or len(ln.text) == 1
        assert (pg.image[int(y0):int(y1) + 1, int(x0):int(x1) + 1] < 128).any(), ln.text
    res = run_ocr(data, OcrOptions(dpi=144, fields="off"))
    page0 = res.pages[0]
    assert page0.source == "text-layer"
    assert [ln.text for ln in page0.lines][:3] == TABLE[0]
    assert page0.tables[0].rows == TABLE  # 3 rows of 3 columns, as shown (the old layer gave them transposed)


def test_text_drawn_turned_keeps_its_lines_and_says_so():
    pdf = pdfium.PdfDocument.new()
    page = pdf.new_page(300, 400)
    for i, t in enumerate(INVOICE):  # text running up the page, rows from left to right
        put(pdf, page, t, 60 + 30 * i, 40, m=(0, 1, -1, 0))
    page.gen_content()
    pg = next(iter_pages(save(pdf), dpi=144))
    assert [ln.text for ln in pg.text_layer] == INVOICE
    assert pg.layer_stats["turn"] == 270 and "turned by 270 degrees" in pg.warnings[0]
    first = pg.text_layer[0]
    x0, y0, x1, y1 = first.bounds
    assert y1 - y0 > 3 * (x1 - x0)  # the line runs up the page
    assert first.box[0][1] > first.box[1][1]  # and its polygon starts at the text's top-left (bottom of the page)


def _hand_pdf(content: bytes, font: bytes, extra: list[bytes]) -> bytes:
    """A minimal PDF written by hand: one 400x300 page, font F1, the given content stream."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 300] /Resources << /Font << /F1 5 0 R >> >> "
            b"/Contents 4 0 R >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream", font, *extra]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


SENTENCES = [b"Invoice number 2024 17 for the garden tools", b"Hammer and saw with a box of nails",
             b"Total amount due today"]


def test_private_use_glyphs_are_rejected_and_the_page_is_ocred_with_a_warning():
    content = b"BT /F1 14 Tf " + b" ".join(b"1 0 0 1 30 %d Tm (%s) Tj" % (250 - 40 * i, t)
                                          for i, t in enumerate(SENTENCES)) + b" ET"
    cmap = (b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /X def 1 begincodespacerange "
            b"<00> <FF> endcodespacerange 1 beginbfrange <21> <7E> <E021> endbfrange endcmap CMapName currentdict "
            b"/CMap defineresource pop end end")
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 6 0 R >>"
    data = _hand_pdf(content, font, [b"<< /Length %d >>\nstream\n" % len(cmap) + cmap + b"\nendstream"])
    assert "\ue049" in pdfium.PdfDocument(data)[0].get_textpage().get_text_range()  # what PDFium gives: noise
    pg = next(iter_pages(data, dpi=150))
    assert pg.text_layer is None
    assert "no Unicode mapping" in pg.warnings[0] and "read with OCR instead" in pg.warnings[0]
    res = run_ocr(data, OcrOptions(dpi=150, engine="rapidocr", tables=False, fields="off"))
    assert res.pages[0].source == "ocr" and "garden tools" in res.pages[0].text
    # the same page with a real font mapping keeps its text layer
    good = _hand_pdf(content, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>", [])
    pg = next(iter_pages(good, dpi=150))
    assert [ln.text for ln in pg.text_layer] == [t.decode() for t in SENTENCES] and pg.warnings == []


def test_one_glyph_per_line_and_missing_spaces_are_rejected():
    pdf = pdfium.PdfDocument.new()
    page = pdf.new_page(400, 600)
    for i, ch in enumerate("TOTALDUE2024"):  # stacked letters: every row one glyph
        put(pdf, page, ch, 40, 560 - 40 * i, size=14)
    page.gen_content()
    pg = next(iter_pages(save(pdf), dpi=72))
    assert pg.text_layer is None and "12 of 12 lines are a single character" in pg.warnings[0]

    pdf = pdfium.PdfDocument.new()
    page = pdf.new_page(600, 300)
    for i, t in enumerate(["Theinvoicetotalisduetodayforthegardentools", "Pleasepaywithinthirtydaysofthisdate"]):
        put(pdf, page, t, 20, 250 - 30 * i)
    page.gen_content()
    pg = next(iter_pages(save(pdf), dpi=72))
    assert pg.text_layer is None and "no spaces" in pg.warnings[0]


def test_quality_figures_before_and_after():
    pdf = pdfium.PdfDocument.new()
    page = pdf.new_page(400, 300)
    for i, t in enumerate(INVOICE):
        put(pdf, page, t, 30, 260 - 30 * i, per_glyph=True)
    page.gen_content()
    doc = pdfium.PdfDocument(save(pdf))
    stats = read_layer(doc[0], 1.0).stats()
    assert stats == {"lines": 4, "one_char_lines": 0, "one_char_share": 0.0, "chars": 60, "unmapped": 0, "turn": 0,
                     "usable": True}
    assert np.isclose(sum(len(t.replace(" ", "")) for t in INVOICE), stats["chars"])
