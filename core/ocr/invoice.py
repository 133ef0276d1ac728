"""Invoice and receipt fields from OCR lines: vendor, number, ISO date, totals, tax, currency, tax id,
line items, with checks (valid date; line items and tax against the total) and flags."""

from __future__ import annotations

import datetime as dt
import re

from core.ocr.types import InvoiceFields, LineItem, OcrLine, OcrResult

MONTHS = {m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                      "dec"], 1)}
AMOUNT = r"(?<![\w.])[-(]?(?:[$€£¥₹]|rs\.?|inr|usd|eur|gbp)?\s?(\d{1,3}(?:[,\s]\d{3})+(?:[.,]\d{2})|\d+[.,]\d{2})\)?(?![\d%])"
CURRENCIES = [(r"₹\s?\d|\brs\.?\s?-?\d|\binr\b|\brupees?\b", "INR"), (r"€|\beur\b|\beuros?\b", "EUR"),
              (r"£|\bgbp\b", "GBP"), (r"\busd\b|us\$|\$\s?\d", "USD"), (r"¥|\bjpy\b|\byen\b", "JPY"),
              (r"\bcny\b|\brmb\b|元", "CNY"), (r"\bchf\b", "CHF"), (r"\bcad\b", "CAD"), (r"\baud\b", "AUD")]
COMPANY = re.compile(r"\b(inc|ltd|llc|gmbh|pvt|plc|corp|corporation|company|co\.|s\.a\.|sarl|bv|ag|limited)\b", re.I)
ITEM_STOP = re.compile(r"total|tax|vat|gst|charges|credit|discount|balance|amount due|paid|payment|shipping|"
                       r"subtotal|invoice|phone|date|account|number", re.I)


def looks_like_invoice(text: str) -> bool:
    """True when the text reads like an invoice or receipt (worth extracting fields)."""
    t = text.lower()
    return ("invoice" in t or "receipt" in t or "bill" in t) and ("total" in t or "amount" in t)


def _rows(lines: list[OcrLine]) -> list[str]:
    """Lines grouped into visual rows (same height band), joined left to right."""
    rows: list[list[OcrLine]] = []
    for ln in sorted(lines, key=lambda x: x.bounds[1]):
        top, bot = ln.bounds[1], ln.bounds[3]
        if rows:
            r = rows[-1]
            rtop, rbot = min(x.bounds[1] for x in r), max(x.bounds[3] for x in r)
            if min(bot, rbot) - max(top, rtop) > 0.5 * min(bot - top, rbot - rtop):
                r.append(ln)
                continue
        rows.append([ln])
    return [" ".join(x.text for x in sorted(r, key=lambda x: x.bounds[0])) for r in rows]


def parse_amount(text: str) -> float | None:
    """The last money amount in a text (e.g. "$1,234.50" -> 1234.5), None when there is none."""
    found = re.findall(AMOUNT, text, flags=re.I)
    if not found:
        return None
    raw = found[-1].replace(" ", "")
    if re.search(r",\d{2}$", raw) and "." not in raw:
        raw = raw.replace(".", "").replace(",", ".")
    raw = raw.replace(",", "")
    try:
        return float(raw)
    except ValueError:
        return None


def parse_date(text: str) -> str | None:
    """The first date in a text as ISO YYYY-MM-DD (day-first for ambiguous numeric dates), or None."""
    t = text.lower()
    m = re.search(r"\b(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\b", t)
    cands: list[tuple[int, int, int]] = []
    if m:
        cands.append((int(m.group(1)), int(m.group(2)), int(m.group(3))))
    m = re.search(r"\b([a-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?\s*,?\s*(\d{4})\b", t)
    if m and m.group(1)[:3] in MONTHS:
        cands.append((int(m.group(3)), MONTHS[m.group(1)[:3]], int(m.group(2))))
    m = re.search(r"\b(\d{1,2})(?:st|nd|rd|th)?[\s-]+([a-z]{3,9})\.?[\s,-]+(\d{4})\b", t)
    if m and m.group(2)[:3] in MONTHS:
        cands.append((int(m.group(3)), MONTHS[m.group(2)[:3]], int(m.group(1))))
    m = re.search(r"\b(\d{1,2})[-/.](\d{1,2})[-/.](\d{4}|\d{2})\b", t)
    if m:
        a, b, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
        y = y + 2000 if y < 100 else y
        cands.append((y, a, b) if a <= 12 < b else (y, b, a))
    for y, mo, d in cands:
        try:
            return dt.date(y, mo, d).isoformat()
        except ValueError:
            continue
    return None


def _value_after(rows: list[str], pattern: str, value: str) -> str | None:
    """The first `value` match after a label `pattern`, on the same row or the next one."""
    for i, row in enumerate(rows):
        m = re.search(pattern, row, flags=re.I)
        if not m:
            continue
        for text in (row[m.end():], rows[i + 1] if i + 1 < len(rows) else ""):
            v = re.search(value, text, flags=re.I)
            if v:
                return v.group(1) if v.groups() else v.group(0)
    return None


def _amount_here(rows: list[str], i: int) -> float | None:
    """The amount on row i, or on the next row when that row is only an amount."""
    amt = parse_amount(rows[i])
    if amt is None and i + 1 < len(rows) and len(re.findall(r"[a-z]", rows[i + 1].lower())) <= 3:
        amt = parse_amount(rows[i + 1])
    return amt


def extract_fields(result: OcrResult | list[OcrLine]) -> InvoiceFields:
    """Invoice/receipt fields of a result (all pages), with checks and flags on what does not add up."""
    if isinstance(result, OcrResult):
        rows = [r for p in result.pages for r in _rows(p.lines)]
    else:
        rows = _rows(result)
    f = InvoiceFields()
    text = "\n".join(rows)
    low = text.lower()
    # invoice number
    num = _value_after(rows, r"\b(?:invoice|inv|bill|receipt)\s*(?:no\.?|number|num|#|id)\s*[:#.]?",
                       r"(#?\s?[A-Z0-9][A-Z0-9_\-/]{3,})")
    if num:
        f.invoice_number = num.replace(" ", "")
    # date: the invoice date first, else any date
    for pattern in (r"invoice\s*date", r"\bdate\b", r""):
        found = None
        for i, row in enumerate(rows):
            if pattern and not re.search(pattern, row, flags=re.I):
                continue
            found = parse_date(row) or (parse_date(rows[i + 1]) if pattern and i + 1 < len(rows) else None)
            if found:
                break
        if found:
            f.date = found
            break
    # currency
    counts = {code: len(re.findall(pat, low)) for pat, code in CURRENCIES}
    if max(counts.values()) > 0:
        f.currency = max(counts, key=lambda k: counts[k])
    # totals
    totals: list[tuple[int, float]] = []
    for i, row in enumerate(rows):
        r = row.lower()
        if re.search(r"sub\s*-?total|total\s*(?:before|excl)|net amount", r):
            amt = _amount_here(rows, i)
            if amt is not None and f.subtotal is None:
                f.subtotal = amt
            continue
        if re.search(r"grand total|total amount|amount due|balance due|total due|\btotal\b", r):
            amt = _amount_here(rows, i)
            if amt is not None:
                prio = 3 if "grand" in r else 2 if re.search(r"amount due|total amount|balance due|invoice", r) else 1
                totals.append((prio, amt))
        elif re.search(r"\b(?:tax|vat|gst|sales tax)\b", r) and not re.search(r"tin|id|no\b|number|#|reg|inclusive", r):
            amt = _amount_here(rows, i)
            if amt is not None and f.tax is None:
                f.tax = amt
    if totals:
        best = max(p for p, _ in totals)
        f.total = max(a for p, a in totals if p == best)
    # tax id
    tid = _value_after(rows, r"\b(?:vat\s*/?\s*tin|gstin|vat\s*(?:no|number|reg\w*|id)|tax\s*id|tin|ein|abn)\b\.?\s*[:#]?",
                       r"([A-Z0-9][A-Z0-9\-]{6,}[A-Z0-9])")
    if tid:
        f.tax_id = tid.strip()
    # vendor
    for row in rows[:6]:
        m = re.match(r"^\s*(.+?)\s+(?:tax\s+)?invoice\b", row, flags=re.I)
        if m and len(re.findall(r"[A-Za-z]", m.group(1))) >= 3:
            f.vendor = m.group(1).strip(" :-")
            break
    if f.vendor is None:
        sold = _value_after(rows, r"\b(?:sold by|from|vendor|seller|supplier)\s*:", r"([^\n]{3,})")
        if sold:
            f.vendor = sold.strip(" :,.")
    if f.vendor is None:
        f.vendor = next((r.strip() for r in rows[:15] if COMPANY.search(r)), None)
    if f.vendor is None:
        f.vendor = next((r.strip() for r in rows if len(re.findall(r"[A-Za-z]", r)) >= 3), None)
    # line items
    for row in rows:
        amt = parse_amount(row)
        if amt is None or ITEM_STOP.search(row):
            continue
        desc = re.sub(AMOUNT, " ", row, flags=re.I)
        desc = re.sub(r"\s+\d+(?:\.\d+)?%?", " ", desc)
        desc = " ".join(desc.split()).strip(" :-|")
        if len(re.findall(r"[^\W\d_]", desc)) < 3:
            continue
        qty = re.search(r"\s(\d{1,4})\s+" + AMOUNT, row, flags=re.I)
        f.line_items.append(LineItem(desc, amt, float(qty.group(1)) if qty else None))
    # checks
    if f.date is not None:
        f.checks["date_valid"] = True
    elif re.search(r"date", low):
        f.checks["date_valid"] = False
        f.flags.append("a date label was found but no valid date could be read")
    tol = lambda a: max(0.02, 0.01 * abs(a))  # noqa: E731
    if f.total is not None and f.subtotal is not None:
        ok = abs(f.subtotal + (f.tax or 0.0) - f.total) <= tol(f.total)
        f.checks["subtotal_plus_tax_equals_total"] = ok
        if not ok:
            f.flags.append(f"subtotal {f.subtotal:.2f} + tax {f.tax or 0:.2f} does not equal total {f.total:.2f}")
    if f.total is not None and f.line_items:
        items = sum(li.amount or 0.0 for li in f.line_items)
        ok = any(abs(items + extra - f.total) <= tol(f.total) for extra in (0.0, f.tax or 0.0))
        f.checks["line_items_plus_tax_equal_total"] = ok
        if not ok:
            f.flags.append(f"line items {items:.2f} + tax {f.tax or 0:.2f} do not add up to total {f.total:.2f}")
    return f
