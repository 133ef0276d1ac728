"""Invoice fields filled by Qwen3-VL: the model answers the field schema as JSON, the answer is validated
against that schema, and the rules of core.ocr.invoice fill what the model left empty.

The model is asked through the core.vlm `Engine` interface (the process's one engine; the OCR registry's
`vlm` entry wraps it). It sees the page image when one is given and the OCR text with numbered lines, and
may name the lines each value came from. An answer that is not a JSON object is ignored with a warning;
a field whose value does not fit the schema (a date that is no date, a total that is no number) is
dropped with a warning, the others are kept. Every value the model gave gets its evidence from the OCR
lines where that value is written; a value written nowhere on the page keeps a low confidence and a flag.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import numpy as np

from core.ocr.invoice import Row, amounts, check, evidence, extract_fields, parse_amount, parse_date, rows_of
from core.ocr.types import FieldEvidence, InvoiceFields, LineItem, OcrLine, OcrResult

FIELDS_MAX_NEW_TOKENS = 512
TEXT_FIELDS = ("vendor", "address", "invoice_number", "tax_id")
MONEY_FIELDS = ("subtotal", "tax", "total")
SCHEMA: dict[str, str] = {
    "vendor": "string: the issuer's (seller's) name, never the buyer's",
    "address": "string: the issuer's address on one line",
    "invoice_number": "string: the invoice or receipt number",
    "date": "string: the invoice date as YYYY-MM-DD",
    "currency": "string: ISO 4217 code such as EUR, USD, JPY",
    "subtotal": "number: the amount before tax",
    "tax": "number: the tax amount",
    "total": "number: the amount to pay, after tax and rounding",
    "tax_id": "string: the issuer's VAT or tax number",
    "line_items": "list of {description: string, quantity: number, unit_price: number, amount: number}",
    "lines": "object: for each field you filled, the numbers of the text lines it came from, e.g. {\"total\": [12]}",
}
MAX_TEXT = 300
MAX_LINES_IN_PROMPT = 200


def build_prompt(lines: list[str] | None = None) -> str:
    """The JSON prompt: the schema, and the OCR text with numbered lines when there is some."""
    keys = "\n".join(f'- "{k}": {v}' for k, v in SCHEMA.items())
    prompt = ("Read the fields of this invoice or receipt. Answer with one JSON object only, no other text, "
              f"with these keys (null when the document does not show it):\n{keys}\n")
    if lines:
        shown = lines[:MAX_LINES_IN_PROMPT]
        prompt += "\nText read from the document, one numbered line each:\n" + "\n".join(
            f"[{i}] {t}" for i, t in enumerate(shown))
    return prompt


def parse_answer(text: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The JSON object of the model's answer (code fences and text around it allowed), or None and why."""
    raw = (text or "").strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", raw, flags=re.S)
    if fence:
        raw = fence.group(1).strip()
    start = raw.find("{")
    if start < 0:
        return None, ["the model's answer holds no JSON object; its fields are ignored"]
    try:
        obj, _ = json.JSONDecoder().raw_decode(raw[start:])
    except json.JSONDecodeError as exc:
        return None, [f"the model's answer is not valid JSON ({exc.msg} at character {exc.pos}); its fields are "
                      "ignored"]
    if not isinstance(obj, dict):
        return None, ["the model's answer is not a JSON object; its fields are ignored"]
    return obj, []


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)) and np.isfinite(v):
        return float(v)
    if isinstance(v, str) and v.strip():
        got = parse_amount(v)
        if got is None and re.fullmatch(r"-?\d+(?:\.\d+)?", v.strip()):
            got = float(v.strip())
        return got
    return None


def validate(obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The answer's fields that fit the schema (normalised: ISO dates, float amounts, upper-case currency
    codes), and a warning for each field that does not. Unknown keys are ignored; null means "not shown"."""
    out: dict[str, Any] = {}
    warnings: list[str] = []

    def bad(key: str, value: Any, why: str) -> None:
        warnings.append(f"the model's {key} {str(value)[:40]!r} was ignored: {why}")

    for key in TEXT_FIELDS:
        v = obj.get(key)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool) and key in ("invoice_number", "tax_id"):
            v = str(v)
        if not isinstance(v, str):
            bad(key, v, "not a string")
        elif len(v) > MAX_TEXT:
            bad(key, v, f"longer than {MAX_TEXT} characters")
        else:
            out[key] = " ".join(v.split())
    v = obj.get("date")
    if v is not None and v != "":
        iso = None
        if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v.strip()):
            try:
                iso = dt.date.fromisoformat(v.strip()).isoformat()
            except ValueError:
                iso = None
        elif isinstance(v, str):
            iso = parse_date(v)
        if iso is None:
            bad("date", v, "not a valid date (YYYY-MM-DD)")
        else:
            out["date"] = iso
    v = obj.get("currency")
    if v is not None and v != "":
        if isinstance(v, str) and re.fullmatch(r"[A-Za-z]{3}", v.strip()):
            out["currency"] = v.strip().upper()
        else:
            bad("currency", v, "not a three-letter ISO 4217 code")
    for key in MONEY_FIELDS:
        v = obj.get(key)
        if v is None or v == "":
            continue
        num = _number(v)
        if num is None:
            bad(key, v, "not a number")
        else:
            out[key] = round(num, 2)
    items = obj.get("line_items")
    if items not in (None, ""):
        if not isinstance(items, list):
            bad("line_items", items, "not a list")
        else:
            good = []
            for it in items:
                if not isinstance(it, dict) or not isinstance(it.get("description"), str) or \
                        not it["description"].strip():
                    continue
                good.append(LineItem(" ".join(it["description"].split())[:MAX_TEXT], _number(it.get("amount")),
                                     _number(it.get("quantity")), _number(it.get("unit_price"))))
            if items and not good:
                bad("line_items", items, "no item has a description")
            elif good:
                out["line_items"] = good
    lines = obj.get("lines")
    if isinstance(lines, dict):
        out["lines"] = {k: [int(i) for i in v if isinstance(i, int) and not isinstance(i, bool)]
                        for k, v in lines.items() if isinstance(v, list)}
    return out, warnings


def _norm(s: Any) -> str:
    return "".join(ch for ch in str(s or "").casefold() if ch.isalnum())


def _where(key: str, value: Any, rows: list[Row]) -> list[Row]:
    """The rows where a value is written (a name or number as text, an amount among the row's amounts,
    a date by its reading)."""
    if key in MONEY_FIELDS:
        return [r for r in rows if any(abs(a[0] - value) < 0.005 for a in amounts(r.text))]
    if key == "date":
        return [r for r in rows if parse_date(r.text) == value]
    if key == "currency":
        return [r for r in rows if value.lower() in r.low or (value == "EUR" and "€" in r.text) or
                (value == "USD" and "$" in r.text) or (value in ("JPY", "CNY") and re.search("[¥￥円元]", r.text))]
    want = _norm(value)
    if not want:
        return []
    hits = [r for r in rows if want in _norm(r.text)]
    if hits or key != "address":
        return hits
    # an address is often spread over several lines: the rows that hold a piece of it
    return [r for r in rows if len(_norm(r.text)) >= 4 and _norm(r.text) in want]


def merge(rules: InvoiceFields, answer: dict[str, Any], rows: list[Row], text: str,
          warnings: list[str] | None = None) -> InvoiceFields:
    """The model's fields over the rules' ones: each value the model gave replaces the rules' value (a
    disagreement is flagged), each one it left empty keeps the rules' value; every model value gets its
    evidence from the rows where it is written, then the checks run again on the result."""
    f = InvoiceFields.from_dict(json.loads(json.dumps(_asdict(rules))))
    f.warnings = list(rules.warnings) + list(warnings or [])
    named = answer.get("lines") or {}
    flat = list(rows)
    for key in TEXT_FIELDS + ("date", "currency") + MONEY_FIELDS:
        if key not in answer:
            continue
        value = answer[key]
        old = getattr(f, key)
        if old is not None and old != value and not (key in MONEY_FIELDS and abs(old - value) < 0.005):
            f.flags.append(f"the model read {key} as {value!r} where the text rules read {old!r}; the model's "
                           "value is kept")
        setattr(f, key, value)
        hits = _where(key, value, flat)
        picked = [flat[i] for i in named.get(key, []) if 0 <= i < len(flat)]
        if picked and not any(r in hits for r in picked) and hits:
            picked = []
        use = [r for r in picked if r in hits] or hits[:1] or picked
        if use:
            ev = evidence(use[:3], None, 0.85 if hits else 0.5)
        else:
            ev = FieldEvidence("", rows[0].page if rows else 0, [], [], 0.4)
            f.flags.append(f"the model's {key} {value!r} is not written in the text read from the page")
        ev.source = "model"
        f.evidence[key] = ev
    if answer.get("line_items"):
        f.line_items = answer["line_items"]
        f.evidence = {k: v for k, v in f.evidence.items() if not k.startswith("line_items[")}
        for i, item in enumerate(f.line_items):
            hits = [r for r in flat if _norm(item.description) and _norm(item.description) in _norm(r.text)]
            ev = evidence(hits[:1], None, 0.8) if hits else FieldEvidence("", 0, [], [], 0.4)
            ev.source = "model"
            f.evidence[f"line_items[{i}]"] = ev
    return check(f, text, adjust="model")


def _asdict(f: InvoiceFields) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(f)


def _result_of(source: OcrResult | list[OcrLine]) -> OcrResult:
    if isinstance(source, OcrResult):
        return source
    from core.ocr.types import OcrPage

    return OcrResult("lines", "", [OcrPage(0, 0, 0, list(source))])


def extract_fields_with_model(source: OcrResult | list[OcrLine], engine: Any, image: np.ndarray | None = None,
                              max_new_tokens: int = FIELDS_MAX_NEW_TOKENS,
                              rules: InvoiceFields | None = None) -> InvoiceFields:
    """Invoice fields from Qwen3-VL (through the core.vlm Engine `engine`) with the rules filling what it
    left empty; the rules' fields alone, with a warning, when the model fails or its answer is not valid."""
    from core.vlm import EngineError, GenerationParams, ImagePart, user

    result = _result_of(source)
    rules = rules if rules is not None else extract_fields(result)
    rows = rows_of(result)
    text = "\n".join(r.text for r in rows)
    prompt = build_prompt([r.text for r in rows])
    parts: list[Any] = [ImagePart(image)] if image is not None else []
    try:
        answer = engine.generate([user(*parts, prompt)], GenerationParams.greedy_defaults(max_new_tokens),
                                 kind="ocr-fields")
    except EngineError as exc:
        out = InvoiceFields.from_dict(json.loads(json.dumps(_asdict(rules))))
        out.warnings.append(f"the model could not read the fields ({exc}); the fields come from the text rules")
        return out
    obj, problems = parse_answer(answer.text)
    if obj is None:
        out = InvoiceFields.from_dict(json.loads(json.dumps(_asdict(rules))))
        out.warnings.extend(problems)
        return out
    fields, problems = validate(obj)
    if not any(k != "lines" for k in fields):
        problems.append("the model's answer gave no field that fits the schema; the fields come from the text rules")
    return merge(rules, fields, rows, text, problems)


def fields_for_result(result: OcrResult, engines: Any, image: np.ndarray | None = None) -> InvoiceFields:
    """The fields of an OCR result with the model when the OCR registry `engines` has it (its `vlm`
    entry's engine), else the text rules alone."""
    from core.ocr.types import OcrError

    rules = extract_fields(result)
    if engines is None or not getattr(engines, "has_model", False):
        return rules
    try:
        engine = engines.get("vlm").engine
    except OcrError as exc:
        rules.warnings.append(f"the model is not available for the fields ({exc}); they come from the text rules")
        return rules
    return extract_fields_with_model(result, engine, image, rules=rules)
