"""Field exact-match per field on public invoices and receipts, and PDF text-layer quality before/after.

`fields_report(folder)` reads `folder/docs/invoice2data` (the shared eval set) and, when present, the extra
public sets under `extra` (default: $VLSCOPE_EVALDATA or /tmp/evaldata), laid out as fetched:

| set | repository @ commit | files | ground truth |
|---|---|---|---|
| invoice2data | invoice-x/invoice2data @bd2fcce, tests/compare/ | 11 real invoices (PDF; 4 also PNG), EN/FR/DE/NL | `<name>.json`: issuer, amount, date, invoice_number, currency |
| sroie | zzzDavid/ICDAR-2019-SROIE @27be427, data/ (every 30th: 000, 030, ..., 600) | 21 scanned Malaysian receipts (JPG) | key/`<n>.json`: company, date, address, total; box/`<n>.csv`: the text lines |
| zugferd | ZUGFeRD/corpus @47b61be (FNFE-factur-x-examples, Mustangproject, XML-Rechnung/FX, ZUGFeRDv1 Intarsys) | 20 German and French e-invoices (PDF) | the invoice's own embedded XML (CII): number, issue date, seller, currency, net, tax and grand total |

Only names and commits live in the repository; the files stay in the extra folder. Values are compared
after normalising: text fields without case, spaces and punctuation (a vendor may add a legal suffix or
print a shorter form of the name), dates as ISO, amounts to the cent.
"""

from __future__ import annotations

import json
import os
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

SETS = {
    "invoice2data": ("invoice-x/invoice2data", "bd2fcceb867882047173dbd66a9500f47634a0cd", "tests/compare/"),
    "sroie": ("zzzDavid/ICDAR-2019-SROIE", "27be4271b251c256f695acbade9a801bffe85994", "data/{img,key,box}/"),
    "zugferd": ("ZUGFeRD/corpus", "47b61beb29b7de98c3c91cdb3657415c0ede783b",
                "ZUGFeRDv2/correct/FNFE-factur-x-examples, ZUGFeRDv2/correct/Mustangproject, XML-Rechnung/FX, "
                "ZUGFeRDv1/correct/Intarsys"),
}
FIELDS = ("vendor", "address", "date", "invoice_number", "currency", "subtotal", "tax", "total")


def default_extra() -> Path:
    """Where the fetched extra sets are: $VLSCOPE_EVALDATA, else /tmp/evaldata."""
    return Path(os.environ.get("VLSCOPE_EVALDATA") or "/tmp/evaldata")


# --- comparing ---------------------------------------------------------------------------------------

def norm(s: Any) -> str:
    """Lower-case letters and digits only ("BOOK TA .K (TAMAN DAYA) SDN BHD" -> "booktaktamandayasdnbhd")."""
    return "".join(ch for ch in str(s or "").casefold() if ch.isalnum())


def same_name(got: Any, want: Any) -> bool:
    """Equal names after normalising; the value may add a legal suffix (Inc., GmbH, B.V.) or print a shorter
    form that keeps most of the name."""
    g, w = norm(got), norm(want)
    if not g or not w:
        return False
    return g == w or (w in g and len(g) <= len(w) + 8) or (g in w and len(g) >= 0.6 * len(w))


def same_amount(got: Any, want: Any) -> bool:
    try:
        return got is not None and abs(float(got) - float(want)) < 0.005
    except (TypeError, ValueError):
        return False


def _amount_text(s: str) -> float | None:
    from core.ocr.invoice import parse_amount

    v = parse_amount(str(s))
    if v is None:
        try:
            return float(str(s).replace("$", "").replace(",", ""))
        except ValueError:
            return None
    return v


def compare(fields: Any, truth: dict[str, Any]) -> dict[str, bool]:
    """Which ground-truth fields the extracted fields got right (only the fields the truth has)."""
    out: dict[str, bool] = {}
    unsigned = bool(truth.get("_unsigned"))
    for key, want in truth.items():
        if key.startswith("_"):
            continue
        got = getattr(fields, key, None)
        if unsigned and key in ("subtotal", "tax", "total") and got is not None:
            got = abs(got)
        if key == "vendor":
            out[key] = same_name(got, want)
        elif key == "address":
            if isinstance(want, dict):  # street and postcode must both be in it
                out[key] = all(norm(v) in norm(got) for v in want.values() if v) and bool(got)
            else:
                out[key] = bool(got) and norm(got) == norm(want)
        elif key in ("subtotal", "tax", "total"):
            out[key] = same_amount(got, want)
        elif key == "invoice_number":
            out[key] = bool(got) and norm(got) == norm(want)
        else:
            out[key] = got == want
    return out


# --- ground truth ------------------------------------------------------------------------------------

def invoice2data_truth(path: Path) -> dict[str, Any]:
    """Ground truth of an invoice2data `<name>.json` in this project's field names."""
    from core.ocr.invoice import parse_date

    gt = json.loads(path.read_text())
    gt = gt[0] if isinstance(gt, list) else gt
    out: dict[str, Any] = {}
    if "issuer" in gt:
        out["vendor"] = gt["issuer"]
    if gt.get("date"):
        out["date"] = parse_date(str(gt["date"])) or str(gt["date"])[:10]
    if gt.get("invoice_number") and len(norm(gt["invoice_number"])) >= 3:
        out["invoice_number"] = gt["invoice_number"]
    if gt.get("currency"):
        out["currency"] = gt["currency"]
    if "amount" in gt:
        out["total"] = float(gt["amount"])
    if "amount_tax" in gt:
        out["tax"] = float(gt["amount_tax"])
    return out


def sroie_truth(path: Path) -> dict[str, Any]:
    """Ground truth of a SROIE key file: company, date (as printed), address, total."""
    from core.ocr.invoice import parse_date

    gt = json.loads(path.read_text())
    out: dict[str, Any] = {"vendor": gt.get("company", ""), "address": gt.get("address", "")}
    if gt.get("date"):
        out["date"] = parse_date(gt["date"]) or gt["date"]
    if gt.get("total"):
        total = _amount_text(gt["total"])
        if total is not None:
            out["total"] = total
    return {k: v for k, v in out.items() if v not in ("", None)}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _find(root: ET.Element, *names: str) -> ET.Element | None:
    """The first element on the path of local names (any namespace, any depth between steps)."""
    node: ET.Element | None = root
    for name in names:
        if node is None:
            return None
        node = next((e for e in node.iter() if _local(e.tag) == name and e is not node), None)
    return node


def zugferd_truth(pdf: Path) -> dict[str, Any] | None:
    """Ground truth from the CII XML embedded in a ZUGFeRD / Factur-X PDF (None when it has none)."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf))
    try:
        xml = None
        for i in range(doc.count_attachments()):
            att = doc.get_attachment(i)
            if att.get_name().lower().endswith(".xml"):
                xml = bytes(att.get_data())
                break
    finally:
        doc.close()
    if not xml:
        return None
    root = ET.fromstring(xml)
    header = _find(root, "ExchangedDocument") or _find(root, "HeaderExchangedDocument")
    out: dict[str, Any] = {}
    if header is not None:
        num = next((e for e in header if _local(e.tag) == "ID"), None)
        if num is not None and num.text:
            out["invoice_number"] = num.text.strip()
        ds = _find(header, "IssueDateTime", "DateTimeString")
        if ds is not None and ds.text and re.fullmatch(r"\d{8}", ds.text.strip()):
            t = ds.text.strip()
            out["date"] = f"{t[:4]}-{t[4:6]}-{t[6:]}"
    seller = _find(root, "SellerTradeParty")
    if seller is not None:
        name = next((e for e in seller if _local(e.tag) == "Name"), None)
        if name is not None and name.text:
            out["vendor"] = name.text.strip()
        addr = _find(seller, "PostalTradeAddress")
        if addr is not None:
            street = next((e.text for e in addr if _local(e.tag) == "LineOne" and e.text), None)
            code = next((e.text for e in addr if _local(e.tag) == "PostcodeCode" and e.text), None)
            if street and code:
                out["address"] = {"street": street.strip(), "postcode": code.strip()}
    cur = _find(root, "InvoiceCurrencyCode")
    if cur is not None and cur.text:
        out["currency"] = cur.text.strip()
    summ = _find(root, "SpecifiedTradeSettlementHeaderMonetarySummation") or \
        _find(root, "SpecifiedTradeSettlementMonetarySummation")
    if summ is not None:
        for key, tag in (("subtotal", "TaxBasisTotalAmount"), ("tax", "TaxTotalAmount"),
                         ("total", "GrandTotalAmount")):
            el = next((e for e in summ if _local(e.tag) == tag and e.text), None)
            if el is not None:
                out[key] = abs(float(el.text.strip()))
        out["_unsigned"] = True  # credit notes and corrections print their amounts negative
    return out


def sroie_lines(csv_path: Path) -> list:
    """The annotated text lines of a SROIE receipt (x1,y1,...,x4,y4,text) as OcrLines."""
    from core.ocr.types import OcrLine

    lines = []
    for raw in csv_path.read_text(errors="replace").splitlines():
        parts = raw.split(",", 8)
        if len(parts) < 9:
            continue
        try:
            xy = [float(v) for v in parts[:8]]
        except ValueError:
            continue
        lines.append(OcrLine(parts[8].strip(), [[xy[0], xy[1]], [xy[2], xy[3]], [xy[4], xy[5]], [xy[6], xy[7]]], 1.0))
    return lines


# --- the report --------------------------------------------------------------------------------------

def _items(folder: Path | None, extra: Path) -> list[tuple[str, Path, str, dict[str, Any]]]:
    """(set, source file, mode, truth) for every file with ground truth."""
    items: list[tuple[str, Path, str, dict[str, Any]]] = []
    seen: set[tuple[str, str]] = set()
    bases = []
    if folder is not None and (folder / "docs" / "invoice2data").is_dir():
        bases.append(folder / "docs" / "invoice2data")
    if (extra / "invoice2data").is_dir():
        bases.append(extra / "invoice2data")
    for base in bases:
        for gt in sorted(base.glob("*.json")):
            truth = invoice2data_truth(gt)
            for src, mode in ((gt.with_suffix(".pdf"), "text layer"), (gt.with_suffix(".png"), "OCR")):
                if src.exists() and (src.name, mode) not in seen:
                    seen.add((src.name, mode))
                    items.append(("invoice2data", src, mode, truth))
    sroie = extra / "sroie"
    if sroie.is_dir():
        for key in sorted(sroie.glob("*.json")):
            truth = sroie_truth(key)
            if key.with_suffix(".csv").exists():
                items.append(("sroie", key.with_suffix(".csv"), "text lines", truth))
            if key.with_suffix(".jpg").exists():
                items.append(("sroie", key.with_suffix(".jpg"), "OCR", truth))
    zug = extra / "zugferd"
    if zug.is_dir():
        for pdf in sorted(zug.glob("*.pdf")):
            truth = zugferd_truth(pdf)
            if truth:
                items.append(("zugferd", pdf, "text layer", truth))
    return items


def fields_report(folder: Path | str | None, extra: Path | str | None = None, cache: Any = None,
                  extract: Callable[[Any], Any] | None = None, modes: tuple[str, ...] | None = None,
                  text_layer: Callable[[Path], Any] | None = None, limit: int | None = None,
                  log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """One row per file and mode: {set, file, mode, checks: {field: right?}, expected, got, seconds}.

    PDFs are read through their text layer (the page is OCRed when the layer is rejected), images with
    OCR (pass a core.cache backend as `cache` to keep the OCR between runs), SROIE's annotated lines
    directly (fields alone, without OCR errors). `extract` replaces core.ocr.invoice.extract_fields and
    `text_layer(pdf) -> OcrResult` the PDF reading (to measure another version on the same files); `limit`
    reads at most that many files of each set and mode."""
    from core.ocr.invoice import extract_fields
    from core.ocr.pipeline import OcrOptions, run_ocr

    extract = extract or extract_fields
    folder = Path(folder) if folder is not None else None
    extra = Path(extra) if extra is not None else default_extra()
    rows: list[dict[str, Any]] = []
    taken: dict[tuple[str, str], int] = {}
    for set_name, src, mode, truth in _items(folder, extra):
        if modes and mode not in modes:
            continue
        if limit is not None and taken.get((set_name, mode), 0) >= limit:
            continue
        taken[(set_name, mode)] = taken.get((set_name, mode), 0) + 1
        t0 = time.perf_counter()
        error = ""
        try:
            if mode == "text lines":
                source: Any = sroie_lines(src)
            elif mode == "text layer" and text_layer is not None:
                source = text_layer(src)
            else:
                source = run_ocr(src, OcrOptions(use_text_layer=(mode == "text layer"), fields="off", tables=False),
                                 cache=cache)
            fields = extract(source)
        except Exception as exc:  # noqa: BLE001 - one broken file is a row with its error, not a stopped report
            fields, error = None, f"{type(exc).__name__}: {exc}"
        checks = compare(fields, truth) if fields is not None else {k: False for k in truth if not k.startswith("_")}
        got = {k: getattr(fields, k, None) for k in truth if not k.startswith("_")} if fields is not None else {}
        rows.append({"set": set_name, "file": src.name, "mode": mode, "checks": checks, "expected": truth,
                     "got": got, "seconds": round(time.perf_counter() - t0, 3), "error": error})
        log(f"{set_name:12} {src.name:44} {mode:10} {sum(checks.values())}/{len(checks)}")
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per set, mode and field: how many files had it right, of how many with that field in the truth."""
    out: dict[tuple[str, str, str], list[int]] = {}
    for row in rows:
        for key, ok in row["checks"].items():
            cell = out.setdefault((row["set"], row["mode"], key), [0, 0])
            cell[0] += int(ok)
            cell[1] += 1
    return [{"set": s, "mode": m, "field": f, "right": r, "of": n, "share": round(r / n, 3) if n else 0.0}
            for (s, m, f), (r, n) in sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1], FIELDS.index(kv[0][2])
                                                                        if kv[0][2] in FIELDS else 99))]


def format_summary(rows: list[dict[str, Any]], baseline: list[dict[str, Any]] | None = None) -> str:
    """A table: set, mode, then one column per field ("right/of"), with the baseline's figures beside."""
    summ = summarise(rows)
    base = {(r["set"], r["mode"], r["field"]): r for r in summarise(baseline)} if baseline else {}
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in summ:
        groups.setdefault((r["set"], r["mode"]), {})[r["field"]] = r
    head = f"{'set':13} {'mode':11} " + " ".join(f"{f:>15}" for f in FIELDS)
    lines = [head, "-" * len(head)]
    for (s, m), cells in groups.items():
        vals = []
        for f in FIELDS:
            c = cells.get(f)
            if c is None:
                vals.append(f"{'-':>15}")
                continue
            b = base.get((s, m, f))
            txt = f"{c['right']}/{c['of']}" + (f" (was {b['right']})" if b else "")
            vals.append(f"{txt:>15}")
        lines.append(f"{s:13} {m:11} " + " ".join(vals))
    return "\n".join(lines)


# --- PDF text layers ---------------------------------------------------------------------------------

def rect_lines(page: Any, scale: float) -> list:
    """The text-layer lines as read before (PDFium's text rectangles, one line each, no rotation applied):
    the baseline of the text-layer figures."""
    from core.ocr.types import OcrLine

    textpage = page.get_textpage()
    try:
        h = page.get_size()[1]
        lines = []
        for i in range(textpage.count_rects()):
            left, bottom, right, top = textpage.get_rect(i)
            text = " ".join(textpage.get_text_bounded(left, bottom, right, top).split())
            if text:
                lines.append(OcrLine(text, [[left * scale, (h - top) * scale], [right * scale, (h - top) * scale],
                                            [right * scale, (h - bottom) * scale],
                                            [left * scale, (h - bottom) * scale]], 1.0))
        return lines
    finally:
        textpage.close()


def text_layer_report(pdfs: list[Path], scale: float = 200 / 72, max_pages: int = 3) -> list[dict[str, Any]]:
    """Per PDF page: lines and one-character-line share before (PDFium's rectangles) and after
    (core.ocr.textlayer), the layer's verdict and the seconds each took."""
    import pypdfium2 as pdfium

    from core.ocr.textlayer import quality, read_layer

    out = []
    for path in pdfs:
        doc = pdfium.PdfDocument(str(path))
        try:
            for i in range(min(len(doc), max_pages)):
                page = doc[i]
                t0 = time.perf_counter()
                before = quality(rect_lines(page, scale))
                t1 = time.perf_counter()
                layer = read_layer(page, scale)
                t2 = time.perf_counter()
                textpage = page.get_textpage()
                ref = set(textpage.get_text_range().split())  # PDFium's own text, split at its spaces
                textpage.close()
                out.append({"file": path.name, "page": i + 1, "before": before, "after": layer.stats(),
                            "problems": layer.problems, "before_s": round(t1 - t0, 4), "after_s": round(t2 - t1, 4),
                            "words": len(layer.words), "words_not_in_pdfium_text": sum(w.text not in ref
                                                                                       for w in layer.words)})
                page.close()
        finally:
            doc.close()
    return out


def rect_layer_result(pdf: Path, scale: float = 200 / 72) -> Any:
    """An OcrResult of a PDF read the way text layers were read before (PDFium's rectangles, every page
    whose rectangles hold 10 or more characters): the baseline of the field figures on PDFs."""
    import pypdfium2 as pdfium

    from core.ocr.types import OcrPage, OcrResult

    doc = pdfium.PdfDocument(str(pdf))
    try:
        pages = []
        for i in range(len(doc)):
            page = doc[i]
            lines = rect_lines(page, scale)
            w, h = page.get_size()
            pages.append(OcrPage(i, int(w * scale), int(h * scale), lines, engine="pdf-text-layer",
                                 source="text-layer"))
            page.close()
        return OcrResult(pdf.name, "", pages, len(pages))
    finally:
        doc.close()
