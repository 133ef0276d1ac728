"""Exports of a whole OCR result: plain text, Markdown, JSON with boxes, CSV/XLSX of tables and fields,
and a searchable PDF (each page image with an invisible text layer over it)."""

from __future__ import annotations

import csv
import html
import io
import json
import math
import zlib
from dataclasses import asdict
from typing import Iterable

import numpy as np
from PIL import Image

from core.ocr.tables import spreadsheet_safe, table_to_csv, table_to_markdown, tables_to_xlsx
from core.ocr.types import OcrError, OcrResult

FORMATS = ("txt", "md", "json", "csv", "xlsx", "pdf", "html")


def to_text(result: OcrResult) -> str:
    """Plain text: pages in order, separated by a form feed line."""
    return "\n\f\n".join(p.text for p in result.pages) + "\n"


def _md_escape(text: str) -> str:
    text = html.escape(text, quote=False)
    for ch in "\\`*_[]#|":
        text = text.replace(ch, "\\" + ch)
    return text


def to_markdown(result: OcrResult) -> str:
    """Markdown: a heading per page, its lines, its tables and the invoice fields (text escaped)."""
    out = [f"# {_md_escape(result.name)}", ""]
    for p in result.pages:
        src = " (text layer)" if p.source == "text-layer" else ""
        out += [f"## Page {p.index + 1}{src}", ""]
        out += [_md_escape(ln.text) + "  " for ln in p.lines] or ["*no text found*"]
        out.append("")
        ruby = [a for a in p.annotations if a.kind == "ruby"]
        if ruby:
            out += ["Ruby (readings set beside the text): " + ", ".join(
                f"{_md_escape(a.base or '?')} ({_md_escape(a.text)})" for a in ruby), ""]
        for i, t in enumerate(p.tables, 1):
            out += [f"### Table {i} ({t.kind})", "", table_to_markdown(t)]
    if result.fields is not None:
        f = result.fields
        out += ["## Fields", "", "| field | value |", "|---|---|"]
        for key in ("vendor", "invoice_number", "date", "currency", "subtotal", "tax", "total", "tax_id"):
            val = getattr(f, key)
            out.append(f"| {key} | {_md_escape('' if val is None else str(val))} |")
        if f.flags:
            out += ["", "**Checks:** " + "; ".join(_md_escape(x) for x in f.flags)]
    return "\n".join(out) + "\n"


def to_json(result: OcrResult, indent: int | None = 2) -> str:
    """JSON: pages -> lines (text, box, confidence), tables (cell grid) and fields."""
    return json.dumps(result.to_dict(), ensure_ascii=False, indent=indent)


def tables_csv(result: OcrResult) -> str:
    """Every table as CSV, tables separated by a blank line (header comment per table)."""
    parts = []
    for i, t in enumerate(result.tables, 1):
        parts.append(f"# table {i}, page {t.page + 1}, {t.kind}\n" + table_to_csv(t))
    return "\n".join(parts)


class _SafeWriter:
    """A csv writer whose text cells never start a formula when the file is opened in a spreadsheet."""

    def __init__(self, buf: io.StringIO) -> None:
        self._w = csv.writer(buf)

    def writerow(self, row: list) -> None:
        self._w.writerow([spreadsheet_safe(v) for v in row])


def fields_csv(result: OcrResult) -> str:
    """Invoice fields as two-column CSV (field, value), then line items (formula-like text escaped)."""
    buf = io.StringIO()
    w = _SafeWriter(buf)
    f = result.fields
    w.writerow(["field", "value"])
    if f is None:
        return buf.getvalue()
    for key in ("vendor", "invoice_number", "date", "currency", "subtotal", "tax", "total", "tax_id"):
        val = getattr(f, key)
        w.writerow([key, "" if val is None else val])
    for key, ok in f.checks.items():
        w.writerow([f"check:{key}", "ok" if ok else "FAILED"])
    if f.line_items:
        w.writerow([])
        w.writerow(["description", "quantity", "unit_price", "amount"])
        for li in f.line_items:
            w.writerow([li.description, li.quantity, li.unit_price, li.amount])
    return buf.getvalue()


def to_csv(result: OcrResult) -> str:
    """CSV: the tables when there are any, else the invoice fields, else one row per line.

    Text that would start a formula (= + - @ TAB CR) is prefixed with a single quote; plain numbers
    such as -12.50 are kept as numbers (see core.ocr.tables.spreadsheet_safe)."""
    if result.tables:
        return tables_csv(result)
    if result.fields is not None:
        return fields_csv(result)
    buf = io.StringIO()
    w = _SafeWriter(buf)
    w.writerow(["page", "line", "text", "confidence", "box"])
    for p in result.pages:
        for i, ln in enumerate(p.lines, 1):
            w.writerow([p.index + 1, i, ln.text, ln.confidence, json.dumps(ln.box)])
    return buf.getvalue()


def to_xlsx(result: OcrResult) -> bytes:
    """XLSX: one sheet per table (or one sheet of lines when there is no table)."""
    if result.tables:
        return tables_to_xlsx(result.tables)
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "lines"
    ws.append(["page", "line", "text", "confidence"])
    for p in result.pages:
        for i, ln in enumerate(p.lines, 1):
            ws.append([p.index + 1, i, spreadsheet_safe(ln.text), ln.confidence])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# ---- searchable PDF ---------------------------------------------------------------------------------------------

class _PdfWriter:
    def __init__(self) -> None:
        self.objects: list[bytes] = []

    def add(self, body: bytes) -> int:
        self.objects.append(body)
        return len(self.objects)

    def set(self, num: int, body: bytes) -> None:
        self.objects[num - 1] = body

    def stream(self, dict_body: bytes, data: bytes, compress: bool = True) -> int:
        if compress:
            data = zlib.compress(data)
            dict_body += b" /Filter /FlateDecode"
        return self.add(b"<< " + dict_body + b" /Length " + str(len(data)).encode() + b" >>\nstream\n" + data
                        + b"\nendstream")

    def bytes(self, root: int) -> bytes:
        out = io.BytesIO()
        out.write(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for i, body in enumerate(self.objects, 1):
            offsets.append(out.tell())
            out.write(f"{i} 0 obj\n".encode() + body + b"\nendobj\n")
        xref = out.tell()
        out.write(f"xref\n0 {len(self.objects) + 1}\n0000000000 65535 f \n".encode())
        for off in offsets:
            out.write(f"{off:010d} 00000 n \n".encode())
        out.write(f"trailer\n<< /Size {len(self.objects) + 1} /Root {root} 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
        return out.getvalue()


def _utf16be_hex(ch: str) -> str:
    return ch.encode("utf-16-be").hex().upper()


def to_searchable_pdf(result: OcrResult, images: Iterable[np.ndarray | Image.Image], jpeg_quality: int = 80,
                      dpi: float | None = None) -> bytes:
    """A PDF with each page image and the OCR text as an invisible, selectable and searchable layer.

    `images` are the original page images in the order of `result.pages` (e.g. from
    `page_images(source, result)`); the text is placed on each line's box. Any script works: the
    text uses a glyph-less Identity-H font whose ToUnicode map carries the characters.
    """
    w = _PdfWriter()
    catalog = w.add(b"")
    pages_obj = w.add(b"")
    cid_of: dict[str, int] = {}
    font_num = w.add(b"")  # filled at the end, once every character is known
    page_nums = []
    pages = list(result.pages)
    images = list(images)
    if len(images) != len(pages):
        raise OcrError(f"the searchable PDF needs one image per page ({len(pages)} pages, {len(images)} images)")
    for page, img in zip(pages, images):
        pil = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))
        pil = pil.convert("RGB")
        px_w, px_h = pil.size
        page_dpi = dpi or float(result.options.get("dpi") or 200)
        scale = 72.0 / page_dpi
        pw, ph = px_w * scale, px_h * scale
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=jpeg_quality)
        jpg = buf.getvalue()
        img_num = w.add(f"<< /Type /XObject /Subtype /Image /Width {px_w} /Height {px_h} /ColorSpace /DeviceRGB "
                        f"/BitsPerComponent 8 /Filter /DCTDecode /Length {len(jpg)} >>\nstream\n".encode()
                        + jpg + b"\nendstream")
        sx, sy = px_w / max(page.width, 1), px_h / max(page.height, 1)
        ops = [f"q {pw:.3f} 0 0 {ph:.3f} 0 0 cm /Im0 Do Q".encode(), b"BT 3 Tr"]
        for ln in page.lines:
            text = ln.text.strip()
            if not text:
                continue
            pts = np.asarray(ln.box, dtype=float) * [sx, sy]
            p0, p1, p3 = pts[0], pts[1], pts[3]
            run = float(np.linalg.norm(p1 - p0))
            height = float(np.linalg.norm(p3 - p0))
            if ln.vertical and run < height:
                # a vertical column: text runs down the column's long side
                p0, p1, p3 = pts[0], pts[3], pts[1]
                run, height = height, float(np.linalg.norm(pts[1] - pts[0]))
            if run < 1 or height < 1:
                continue
            angle = math.atan2(-(p1[1] - p0[1]), p1[0] - p0[0])
            size = max(height * scale * 0.85, 1.0)
            hscale = 100.0 * (run * scale) / max(len(text) * size * 0.5, 1e-3)
            # baseline: bottom-left corner of the box in PDF coordinates
            bx = (p3[0]) * scale
            by = ph - p3[1] * scale
            cos, sin = math.cos(angle), math.sin(angle)
            from core.ocr.scripts import detect_script

            if detect_script(text) in ("Arabic", "Hebrew"):
                text = text[::-1]  # PDF content holds right-to-left text in visual order
            codes = []
            for ch in text:
                if ch not in cid_of:
                    cid_of[ch] = len(cid_of) + 1
                codes.append(f"{cid_of[ch]:04X}")
            ops.append(f"/F1 {size:.2f} Tf {hscale:.2f} Tz {cos:.5f} {sin:.5f} {-sin:.5f} {cos:.5f} {bx:.3f} {by:.3f} "
                       f"Tm <{''.join(codes)}> Tj".encode())
        ops.append(b"ET")
        content = w.stream(b"", b"\n".join(ops))
        page_num = w.add(f"<< /Type /Page /Parent {pages_obj} 0 R /MediaBox [0 0 {pw:.3f} {ph:.3f}] "
                         f"/Resources << /XObject << /Im0 {img_num} 0 R >> /Font << /F1 {font_num} 0 R >> >> "
                         f"/Contents {content} 0 R >>".encode())
        page_nums.append(page_num)
    if not page_nums:
        raise OcrError("the result has no pages to put in a PDF")
    # ToUnicode map for every character used
    entries = sorted(cid_of.items(), key=lambda kv: kv[1])
    cmap = ["/CIDInit /ProcSet findresource begin", "12 dict begin", "begincmap",
            "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def",
            "/CMapName /Adobe-Identity-UCS def", "/CMapType 2 def", "1 begincodespacerange", "<0000> <FFFF>",
            "endcodespacerange"]
    for i in range(0, len(entries), 100):
        chunk = entries[i:i + 100]
        cmap.append(f"{len(chunk)} beginbfchar")
        cmap += [f"<{cid:04X}> <{_utf16be_hex(ch)}>" for ch, cid in chunk]
        cmap.append("endbfchar")
    cmap += ["endcmap", "CMapName currentdict /CMap defineresource pop", "end", "end"]
    tounicode = w.stream(b"", "\n".join(cmap).encode())
    descriptor = w.add(b"<< /Type /FontDescriptor /FontName /GlyphLessFont /Flags 5 /FontBBox [0 0 500 1000] "
                       b"/ItalicAngle 0 /Ascent 1000 /Descent 0 /CapHeight 1000 /StemV 80 >>")
    cidfont = w.add(f"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /GlyphLessFont /CIDSystemInfo << /Registry "
                    f"(Adobe) /Ordering (Identity) /Supplement 0 >> /FontDescriptor {descriptor} 0 R /DW 500 "
                    f"/CIDToGIDMap /Identity >>".encode())
    w.set(font_num, f"<< /Type /Font /Subtype /Type0 /BaseFont /GlyphLessFont /Encoding /Identity-H "
                    f"/DescendantFonts [{cidfont} 0 R] /ToUnicode {tounicode} 0 R >>".encode())
    kids = " ".join(f"{n} 0 R" for n in page_nums)
    w.set(pages_obj, f"<< /Type /Pages /Kids [{kids}] /Count {len(page_nums)} >>".encode())
    w.set(catalog, f"<< /Type /Catalog /Pages {pages_obj} 0 R >>".encode())
    return w.bytes(catalog)


def page_images(source, result: OcrResult, max_pixels: int = 178_956_970, settings=None) -> list[np.ndarray]:
    """The original page images of `result`'s pages, loaded again from the source file or bytes."""
    from core.ocr.loading import iter_pages

    spec = ",".join(str(p.index + 1) for p in result.pages)
    dpi = float(result.options.get("dpi") or 200)
    return [pg.image for pg in iter_pages(source, spec, dpi, max_pixels, max(len(result.pages), 1), False, settings)]


def _searchable_pdf(result: OcrResult, source, max_pixels: int, settings=None) -> bytes:
    """The searchable PDF, holding the memory of every page image (they are all kept until the PDF is written)."""
    from core.ocr.loading import PAGE_BYTES_PER_PIXEL, _read_source, heavy, is_pdf, load_bytes, page_pixels

    data = _read_source(source)
    dpi = float(result.options.get("dpi") or 200)
    pixels = [min(px, max_pixels) for px in page_pixels(data, [p.index for p in result.pages], dpi)] or [0]
    # all pages as RGB arrays, plus decoding one page or encoding it as JPEG (~8 bytes a pixel)
    nbytes = PAGE_BYTES_PER_PIXEL * sum(pixels) + max(load_bytes(max(pixels), is_pdf(data)), 8 * max(pixels))
    with heavy(nbytes, "the searchable PDF", settings):
        return to_searchable_pdf(result, page_images(data, result, max_pixels, settings))


def export(result: OcrResult, fmt: str, source=None, max_pixels: int = 178_956_970, settings=None) -> bytes:
    """The result in one format (txt, md, json, csv, xlsx, html, pdf) as bytes; pdf needs the source."""
    fmt = fmt.lower().lstrip(".")
    if fmt == "txt":
        return to_text(result).encode("utf-8")
    if fmt == "md":
        return to_markdown(result).encode("utf-8")
    if fmt == "json":
        return to_json(result).encode("utf-8")
    if fmt == "csv":
        return to_csv(result).encode("utf-8")
    if fmt == "xlsx":
        return to_xlsx(result)
    if fmt == "html":
        from core.ocr.tables import table_to_html

        body = "\n".join(table_to_html(t) for t in result.tables) or "<p>no tables found</p>\n"
        return ("<!doctype html><meta charset=utf-8><title>" + html.escape(result.name) + "</title>\n" + body).encode()
    if fmt == "pdf":
        if source is None:
            raise OcrError("the searchable PDF needs the original file to take the page images from")
        return _searchable_pdf(result, source, max_pixels, settings)
    raise OcrError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "export", "fields_csv", "page_images", "tables_csv", "to_csv", "to_json", "to_markdown",
           "to_searchable_pdf", "to_text", "to_xlsx", "asdict"]
