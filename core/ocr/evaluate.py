"""Accuracy measurement: CER/WER, the evaluation-set report (`vlscope ocr eval`), table cell accuracy
and invoice field accuracy. Reads a folder laid out like ../shared/eval; never special-cases a file.

The report has a table per capability (`SECTIONS`): the OCR runs over ../shared/eval (CER/WER per file,
language, condition), reading quality per script against the plain engine (core.ocr.eval_reading), field
exact-match per field (core.ocr.eval_fields), tables (TEDS, cell accuracy: core.ocr.eval_tables) and
seconds per item of each. Public sets fetched beside the shared folder live in `extra` (default
$VLSCOPE_EVALDATA, else /tmp/evaldata); each section names the folders and sets it read and says so
plainly when they are not there."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import time
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import cv2
import numpy as np

from core.ocr.scripts import detect_script

CONDITIONS = ("original", "blur", "lowlight", "noise", "tilt15", "tilt30", "tilt45", "jpeg30")


# ---- metrics ----------------------------------------------------------------------------------------------------

def _distance(ref: list, hyp: list, free_ends: bool = False) -> int:
    """Levenshtein distance (row-vectorised); with free_ends the best match of ref anywhere inside hyp."""
    m, n = len(ref), len(hyp)
    if m == 0:
        return 0 if free_ends else n
    if n == 0:
        return m
    vocab: dict[Any, int] = {}
    r = np.array([vocab.setdefault(x, len(vocab)) for x in ref])
    h = np.array([vocab.setdefault(x, len(vocab)) for x in hyp])
    idx = np.arange(n + 1)
    prev = np.zeros(n + 1, dtype=np.int64) if free_ends else idx.copy()
    for i in range(1, m + 1):
        cur = np.empty(n + 1, dtype=np.int64)
        cur[0] = i
        sub = prev[:-1] + (h != r[i - 1])
        dele = prev[1:] + 1
        cur[1:] = np.minimum(sub, dele)
        # insertions: cur[j] = min_k<=j (cur[k] + j - k)
        cur = np.minimum.accumulate(cur - idx) + idx
        prev = cur
    return int(prev.min() if free_ends else prev[-1])


def normalise(text: str, cjk: bool | None = None) -> str:
    """NFKC, whitespace collapsed to single spaces (removed entirely for CJK text)."""
    text = unicodedata.normalize("NFKC", text)
    if cjk is None:
        cjk = detect_script(text) in ("Han", "Japanese")
    return "".join(text.split()) if cjk else " ".join(text.split())


def cer(ref: str, hyp: str, partial: bool = False) -> float:
    """Character error rate of hyp against ref (after `normalise`); partial: ref may be a part of hyp."""
    cjk = detect_script(ref) in ("Han", "Japanese")
    r, h = normalise(ref, cjk), normalise(hyp, cjk)
    if not r:
        return 0.0 if not h else 1.0
    return _distance(list(r), list(h), free_ends=partial) / len(r)


def wer(ref: str, hyp: str, partial: bool = False) -> float:
    """Word error rate (CJK text: characters count as words)."""
    cjk = detect_script(ref) in ("Han", "Japanese")
    r, h = normalise(ref, cjk), normalise(hyp, cjk)
    rw = list(r) if cjk else r.split()
    hw = list(h) if cjk else h.split()
    if not rw:
        return 0.0 if not hw else 1.0
    return _distance(rw, hw, free_ends=partial) / len(rw)


# ---- the evaluation set -----------------------------------------------------------------------------------------

@dataclass
class Sample:
    """One image with its reference text: `partial` when only part of the image's text is annotated."""

    path: Path
    reference: str
    language: str
    partial: bool


def _lang_of(text: str) -> str:
    return {"Latin": "en/latin", "Han": "zh", "Japanese": "ja", "Arabic": "ar", "Devanagari": "hi",
            "Cyrillic": "ru"}.get(detect_script(text), "other")


def collect_samples(folder: Path) -> list[Sample]:
    """Images with ground truth under folder/ocr (tesseract_test: <name>.txt; others: ground_truth.json)."""
    out: list[Sample] = []
    ocr = folder / "ocr"
    for sub in sorted(p for p in ocr.iterdir() if p.is_dir()) if ocr.is_dir() else []:
        gt_json = sub / "ground_truth.json"
        if gt_json.exists():
            data = json.loads(gt_json.read_text(encoding="utf-8"))
            for name, gt in data.items():
                if name.startswith("_") or not (sub / name).exists():
                    continue
                if isinstance(gt, list):
                    ref, partial = "\n".join(gt), False
                elif "words_of_one_column" in gt:
                    ref, partial = "".join(gt["words_of_one_column"]), True
                elif "first_line" in gt:
                    ref, partial = gt["first_line"], True
                else:
                    continue
                out.append(Sample(sub / name, ref, _lang_of(ref), partial))
            continue
        for txt in sorted(sub.glob("*.txt")):
            if txt.name.lower().startswith("license"):
                continue
            ref = txt.read_text(encoding="utf-8", errors="replace")
            for img in sorted(sub.iterdir()):
                if img.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg") and (
                        img.stem == txt.stem or img.stem.startswith(txt.stem + "-")):
                    out.append(Sample(img, ref, _lang_of(ref), False))
    return out


def make_condition(image: np.ndarray, condition: str) -> np.ndarray:
    """A degraded copy of an RGB image whose ground truth still holds."""
    if condition == "original":
        return image
    if condition == "blur":
        return cv2.GaussianBlur(image, (0, 0), 1.5)
    if condition == "lowlight":
        return (image.astype(np.float32) * 0.25).astype(np.uint8)
    if condition == "noise":
        rng = np.random.default_rng(0)
        return np.clip(image.astype(np.float32) + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
    if condition.startswith("tilt"):
        from core.ocr.preprocess import rotate_bound

        return rotate_bound(image, float(condition[4:]), border=(255, 255, 255))[0]
    if condition.startswith("jpeg"):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(condition[4:])])
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    raise ValueError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")


@dataclass
class Measurement:
    """One OCR run of the evaluation: file, condition, engine, CER, WER, seconds."""

    file: str
    language: str
    condition: str
    engine: str
    cer: float | None
    wer: float | None
    seconds: float
    error: str = ""


def default_eval_folder() -> Path | None:
    """../shared/eval (beside the project) when it exists, else None."""
    for cand in (Path.cwd().parent / "shared" / "eval", Path(__file__).resolve().parents[3] / "shared" / "eval"):
        if cand.is_dir():
            return cand
    return None


def _hint(lang: str) -> str | None:
    return {"en/latin": "en", "zh": "zh", "ja": "ja", "ar": "ar", "hi": "hi", "ru": "ru"}.get(lang)


def reference_hint(reference: str) -> str | None:
    """The language hint a user would give tesseract for this text: one language per script that has
    at least two letters in it, most frequent first (mixed English and Chinese -> "en+zh")."""
    from core.ocr.scripts import char_script, script_language

    counts: dict[str, int] = {}
    for ch in reference:
        sc = char_script(ch)
        if sc:
            counts[sc] = counts.get(sc, 0) + 1
    hints = []
    for sc in sorted(counts, key=lambda k: -counts[k]):
        h = script_language(sc)
        if counts[sc] >= 2 and h and h not in hints:
            hints.append(h)
    return "+".join(hints) or None


def measure(samples: list[Sample], engines: list[str], conditions: list[str],
            log: Callable[[str], None] = lambda s: None) -> list[Measurement]:
    """Run every engine on every sample under every condition."""
    from core.ocr.loading import load_image
    from core.ocr.pipeline import OcrOptions, ocr_image
    from core.ocr.types import OcrError

    out: list[Measurement] = []
    for s in samples:
        base = load_image(s.path)
        for cond in conditions:
            img = make_condition(base, cond)
            for eng in engines:
                # tesseract needs its language packs named (every script of the text); auto and rapidocr
                # get no hint
                hint = (reference_hint(s.reference) or _hint(s.language)) if eng == "tesseract" else None
                t0 = time.perf_counter()
                try:
                    page = ocr_image(img, OcrOptions(engine=eng if eng != "auto" else "auto", lang=hint, tables=False,
                                                     fields="off"))
                    text = page.text
                    m = Measurement(s.path.name, s.language, cond, eng, cer(s.reference, text, s.partial),
                                    wer(s.reference, text, s.partial), time.perf_counter() - t0)
                except OcrError as exc:
                    m = Measurement(s.path.name, s.language, cond, eng, None, None, time.perf_counter() - t0, str(exc))
                out.append(m)
                log(f"{s.path.name:32} {cond:9} {eng:10} CER {_pct(m.cer):>7}  {m.seconds:5.1f}s {m.error[:60]}")
    return out


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _mean(vals: list[float | None]) -> float | None:
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def table_cell_accuracy(folder: Path, use_text_layer: bool = False) -> dict[str, Any] | None:
    """Cell accuracy on tables/camelot/us-030.pdf page 2 against us-030.expected.json."""
    from core.ocr.pipeline import OcrOptions, run_ocr

    pdf = folder / "tables" / "camelot" / "us-030.pdf"
    exp = folder / "tables" / "camelot" / "us-030.expected.json"
    if not pdf.exists() or not exp.exists():
        return None
    expected = json.loads(exp.read_text())["cells"]["rows"]
    t0 = time.perf_counter()
    res = run_ocr(pdf, OcrOptions(pages="2", use_text_layer=use_text_layer, fields="off"))
    secs = time.perf_counter() - t0
    tables = res.tables
    if not tables:
        return {"cells": sum(len(r) for r in expected), "correct": 0, "accuracy": 0.0, "found_shape": None,
                "seconds": secs}
    best = None
    for t in tables:
        correct = 0
        for r, row in enumerate(expected):
            for c, cell in enumerate(row):
                got = t.rows[r][c] if r < len(t.rows) and c < len(t.rows[r]) else ""
                correct += "".join(got.split()) == "".join(cell.split())
        if best is None or correct > best[0]:
            best = (correct, t)
    total = sum(len(r) for r in expected)
    return {"cells": total, "correct": best[0], "accuracy": best[0] / total, "found_shape": list(best[1].shape),
            "expected_shape": [len(expected), max(len(r) for r in expected)], "kind": best[1].kind, "seconds": secs}


def _norm_id(s: Any) -> str:
    return "".join(ch for ch in str(s or "").lower() if ch.isalnum())


def invoice_field_accuracy(folder: Path) -> list[dict[str, Any]]:
    """Per invoice file (PDF via OCR, PDF via text layer, PNG): which ground-truth fields were read right."""
    from core.ocr.pipeline import OcrOptions, run_ocr

    base = folder / "docs" / "invoice2data"
    rows: list[dict[str, Any]] = []
    if not base.is_dir():
        return rows
    for gt_path in sorted(base.glob("*.json")):
        gt = json.loads(gt_path.read_text())
        gt = gt[0] if isinstance(gt, list) else gt
        for src, layer in ((gt_path.with_suffix(".pdf"), False), (gt_path.with_suffix(".pdf"), True),
                           (gt_path.with_suffix(".png"), False)):
            if not src.exists():
                continue
            t0 = time.perf_counter()
            res = run_ocr(src, OcrOptions(use_text_layer=layer, fields="on", tables=False))
            f = res.fields
            checks: dict[str, bool] = {}
            if "issuer" in gt:
                v = (f.vendor or "").lower()
                checks["issuer"] = bool(v) and (gt["issuer"].lower() in v or v in gt["issuer"].lower())
            if "amount" in gt:
                checks["amount"] = f.total is not None and abs(f.total - float(gt["amount"])) < 0.005
            if "date" in gt:
                checks["date"] = f.date == str(gt["date"])[:10]
            if "invoice_number" in gt:
                checks["invoice_number"] = _norm_id(f.invoice_number) == _norm_id(gt["invoice_number"])
            if "currency" in gt:
                checks["currency"] = f.currency == gt["currency"]
            if gt.get("lines"):
                found = 0
                for line in gt["lines"]:
                    found += any(_norm_id(line["name"]) in _norm_id(li.description) and li.amount is not None and
                                 abs(li.amount - float(line["price_unit"])) < 0.005 for li in f.line_items)
                checks["lines"] = found == len(gt["lines"])
            rows.append({"file": src.name, "mode": "text layer" if layer else "OCR", "checks": checks,
                         "accuracy": sum(checks.values()) / max(len(checks), 1), "seconds": time.perf_counter() - t0,
                         "fields": asdict(f)})
    return rows


SECTIONS = ("ocr", "reading", "fields", "tables", "speed")
"""The report's sections: ocr (CER/WER on ../shared/eval, the camelot cells and invoice2data fields as
before), reading (CER per script against the plain engine), fields (exact match per field), tables (TEDS
and cell accuracy per set), speed (seconds per item of every section that ran)."""


def default_extra() -> Path:
    """Where fetched public sets are kept: $VLSCOPE_EVALDATA, else /tmp/evaldata."""
    return Path(os.environ.get("VLSCOPE_EVALDATA") or "/tmp/evaldata")


def _optional(module: str) -> Any | None:
    """The module, or None when this checkout does not have it (any other import error is raised)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def _call(fn: Callable[..., Any], folder: Path, **maybe: Any) -> Any:
    """fn(folder, ...) with those of the keyword arguments it accepts."""
    params = inspect.signature(fn).parameters
    return fn(folder, **{k: v for k, v in maybe.items() if k in params})


def _sets_read(rows: list[dict[str, Any]], unit: str = "items") -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("set", "?"))] = counts.get(str(r.get("set", "?")), 0) + 1
    return ", ".join(f"{k} ({v} {unit})" for k, v in counts.items())


def _table(p: Callable[[str], None], head: list[str], rows: list[list[str]], first: int = 24) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]
    widths[0] = max(widths[0], first)
    line = "  " + " ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(head))
    p(line)
    p("  " + "-" * (len(line) - 2))
    for r in rows:
        p("  " + " ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))


def _script_of(row: dict[str, Any]) -> str:
    return str(row.get("script") or row.get("language") or row.get("lang") or "?")


def _weighted(rows: list[dict[str, Any]], key: str) -> float | None:
    """Mean of row[key] weighted by the row's `items` (1 when a row is one item); None when no row has it."""
    pairs = [(r[key], r.get("items", 1)) for r in rows if isinstance(r.get(key), (int, float))]
    weight = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / weight if weight else None


def reading_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Mean CER per set and script, one column per reader. Rows are either wide ({set, script, items,
    cer_<reader>: ..., s_<reader>: seconds}, one row per item or per group of `items`) or long ({set, script,
    engine|reader|candidate|mode: name, cer: ...}); `n` is the number of items."""
    wide = sorted({k[4:] for r in rows for k in r if k.startswith("cer_")})
    by = next((k for k in ("reader", "engine", "candidate", "mode") if any(k in r for r in rows)), None)
    columns = wide or (sorted({str(r.get(by)) for r in rows}) if by else ["cer"])
    worse = any("worse_than_plain" in r for r in rows)
    groups: list[tuple[str, str]] = []
    for r in rows:
        if (str(r.get("set", "")), _script_of(r)) not in groups:
            groups.append((str(r.get("set", "")), _script_of(r)))
    body = []
    for st, sc in groups:
        sel = [r for r in rows if str(r.get("set", "")) == st and _script_of(r) == sc]
        cells = []
        for col in columns:
            if wide:
                cells.append(_pct(_weighted(sel, f"cer_{col}")))
            else:
                part = [r for r in sel if not by or str(r.get(by)) == col]
                cells.append(_pct(_weighted(part, "cer")))
        if by and not wide:
            n = len({(r.get("file"), r.get("item")) for r in sel})
        else:
            n = sum(int(r.get("items", 1)) for r in sel)
        extra = [str(sum(int(r.get("worse_than_plain") or 0) for r in sel))] if worse else []
        body.append([f"{st} {sc}".strip(), str(n)] + cells + extra)
    head = ["set script", "n"] + [f"CER {c}" for c in columns] + (["worse than plain"] if worse else [])
    return head, body


def _seconds(rows: list[dict[str, Any]], key: str = "seconds") -> float | None:
    """Seconds per item: the rows' `key` (weighted by their items)."""
    return _weighted(rows, key)


def _reading_section(p: Callable[[str], None], folder: Path, extra: Path, limit: int | None,
                     log: Callable[[str], None]) -> list[dict[str, Any]] | None:
    p("\n## Reading: CER per script, VLScope against the plain engine on the same files")
    mod = _optional("core.ocr.eval_reading")
    if mod is None or not hasattr(mod, "reading_report"):
        p("  skipped: core/ocr/eval_reading.py (reading_report) is not in this checkout")
        return None
    rows = _call(mod.reading_report, folder, extra=extra, limit=limit, log=log)
    if not rows:
        p(f"  no reading sets found: read {folder} and {extra} (missing or without the sets eval_reading knows)")
        return rows
    p(f"  read {folder} and {extra}: {_sets_read(rows)}; CER in %, lower is better")
    head, body = reading_table(rows)
    _table(p, head, body, first=20)
    return rows


def fields_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Exact match per field (rows) and set/mode (columns): right/total and the share."""
    groups: list[tuple[str, str]] = []
    for r in rows:
        if (r.get("set"), r.get("mode")) not in groups:
            groups.append((r.get("set"), r.get("mode")))
    fields: list[str] = []
    for r in rows:
        fields += [k for k in (r.get("checks") or {}) if k not in fields]
    body = []
    for f in fields + ["all fields"]:
        cells = []
        for g in groups:
            sel = [r for r in rows if (r.get("set"), r.get("mode")) == g]
            marks = [v for r in sel for k, v in (r.get("checks") or {}).items() if f in (k, "all fields")]
            cells.append(f"{sum(marks)}/{len(marks)} {100 * sum(marks) / len(marks):.0f}%" if marks else "-")
        body.append([f] + cells)
    return ["field"] + [f"{s} {m}" for s, m in groups], body


def _fields_section(p: Callable[[str], None], folder: Path, extra: Path, limit: int | None,
                    log: Callable[[str], None]) -> list[dict[str, Any]] | None:
    p("\n## Fields: exact match per field")
    mod = _optional("core.ocr.eval_fields")
    if mod is None or not hasattr(mod, "fields_report"):
        p("  skipped: core/ocr/eval_fields.py (fields_report) is not in this checkout")
        return None
    rows = _call(mod.fields_report, folder, extra=extra, limit=limit, log=log)
    if not rows:
        p(f"  no field sets found: read {folder}/docs and {extra} (missing or without the sets eval_fields knows)")
        return rows
    p(f"  read {folder} and {extra}: {_sets_read(rows, 'files')}; right/total files per field")
    head, body = fields_table(rows)
    _table(p, head, body, first=16)
    return rows


def tables_table(summary: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One line per set and mode: tables, found, split, grid shape right, TEDS, TEDS-S, cell accuracy."""
    head = ["set", "mode", "tables", "found", "split", "shape ok", "TEDS", "TEDS-S", "cells ok", "extra", "s/file"]
    body = [[s["set"], s["mode"], str(s["tables"]), str(s["found"]), str(s["split"]), str(s["shape_right"]),
             f"{s['teds']:.3f}", f"{s['teds_struct']:.3f}", f"{100 * s['cell_accuracy']:.1f}%", str(s["extra_tables"]),
             f"{s['seconds_per_file']:.2f}"] for s in summary]
    return head, body


def _tables_section(p: Callable[[str], None], folder: Path, extra: Path, limit: int | None,
                    log: Callable[[str], None]) -> list[dict[str, Any]]:
    from core.ocr import eval_tables

    p("\n## Tables: detection, grid shape, TEDS and cell accuracy")
    found: dict[str, Path] = {}
    for base in (folder, extra):
        for name, path in eval_tables.set_folders(base).items():
            found.setdefault(name, path)
    for s in eval_tables.SETS:
        if s.name in found:
            p(f"  {s.name}: {found[s.name]} ({s.repository} @ {s.commit[:7]})")
        else:
            p(f"  {s.name}: not found in {folder} or {extra} (fetch {s.repository} @ {s.commit[:7]}, {s.path})")
    rows: list[dict[str, Any]] = []
    for name, path in found.items():
        rows += eval_tables.tables_report(path.parent, limit=limit, sets=[name], log=log)
    if not rows:
        p("  no table sets to measure")
        return rows
    p("  TEDS: tree-edit-distance similarity of structure and cell text (1 = identical; TEDS-S structure only); "
      "cells ok: the truth's non-empty cells at the same row and column with the same text")
    head, body = tables_table(eval_tables.summarise(rows))
    _table(p, head, body, first=18)
    return rows


def run_eval(folder: Path, engines: list[str] | None = None, conditions: list[str] | None = None,
             limit: int | None = None, out: TextIO = sys.stdout, json_path: Path | None = None,
             progress: bool = True, extra: Path | None = None, sections: list[str] | None = None) -> dict[str, Any]:
    """Measure every section asked for (default all of SECTIONS) and print its tables; returns what was measured.
    `folder` is ../shared/eval (or one laid out like it), `extra` the folder of fetched public sets."""
    sections = list(sections or SECTIONS)
    for sec in sections:
        if sec not in SECTIONS:
            raise ValueError(f"unknown section {sec!r}; choose from {', '.join(SECTIONS)}")
    extra = extra or default_extra()
    p = lambda s: print(s, file=out, flush=True)  # noqa: E731
    log = (lambda s: print("  " + s, file=sys.stderr, flush=True)) if progress else (lambda s: None)
    p(f"# OCR accuracy report: {folder} (fetched public sets: {extra}{'' if extra.is_dir() else ', not there'})")
    result: dict[str, Any] = {}
    speed: list[tuple[str, float | None, int]] = []
    if "ocr" in sections:
        result.update(_ocr_sections(folder, engines, conditions, limit, p, log))
        for eng in engines or ["rapidocr", "tesseract"]:
            secs = [m["seconds"] for m in result["measurements"] if m["engine"] == eng]
            speed.append((f"OCR page, {eng}", _mean(secs), len(secs)))
    if "reading" in sections:
        rows = _reading_section(p, folder, extra, limit, log)
        result["reading"] = rows
        items = sum(int(r.get("items", 1)) for r in rows or [])
        for key, what in (("s_vlscope", "reading item, VLScope"), ("s_plain", "reading item, plain engine"),
                          ("seconds", "reading item")):
            if rows and any(key in r for r in rows):
                speed.append((what, _seconds(rows, key), items))
    if "fields" in sections:
        rows = _fields_section(p, folder, extra, limit, log)
        result["fields"] = rows
        if rows:
            speed.append(("fields item", _seconds(rows), len(rows)))
    if "tables" in sections:
        rows = _tables_section(p, folder, extra, limit, log)
        result["table_sets"] = rows
        for s in {r["set"] for r in rows}:
            sel = [r for r in rows if r["set"] == s]
            files = len({(r["file"], r["mode"]) for r in sel})
            speed.append((f"table file, {s}", sum(r["seconds"] for r in sel) / max(files, 1), files))
    if "speed" in sections:
        p("\n## Seconds per item")
        if not speed:
            p("  nothing was measured")
        _table(p, ["what", "s/item", "items"], [[w, "n/a" if v is None else f"{v:.2f}", str(n)] for w, v, n in speed])
    if json_path:
        json_path.write_text(json.dumps(result, ensure_ascii=False, indent=1, default=str))
    return result


def _ocr_sections(folder: Path, engines: list[str] | None, conditions: list[str] | None, limit: int | None,
                  p: Callable[[str], None], log: Callable[[str], None]) -> dict[str, Any]:
    """The OCR runs over folder/ocr, the camelot cell accuracy and the invoice2data fields (the report as it was)."""
    engines = engines or ["rapidocr", "tesseract"]
    conditions = conditions or list(CONDITIONS)
    for c in conditions:
        if c not in CONDITIONS:
            raise ValueError(f"unknown condition {c!r}; choose from {', '.join(CONDITIONS)}")
    samples = collect_samples(folder)
    if limit:
        samples = samples[:limit]
    p(f"{len(samples)} files x {len(conditions)} conditions x {len(engines)} engines "
      f"({', '.join(engines)}); CER/WER in %, lower is better; partial = only some lines are annotated")
    if not samples:
        p(f"  no OCR files with ground truth: {folder / 'ocr'} is {'empty' if (folder / 'ocr').is_dir() else 'missing'}")
    ms = measure(samples, engines, conditions, log=log)
    # per file
    p("\n## CER / WER per file, condition and engine")
    head = f"{'file':30} {'lang':8} {'engine':9} " + " ".join(f"{c:>13}" for c in conditions)
    p(head)
    p("-" * len(head))
    for s in samples:
        for eng in engines:
            cells = []
            for c in conditions:
                m = next((x for x in ms if x.file == s.path.name and x.condition == c and x.engine == eng), None)
                cells.append(f"{_pct(m.cer)}/{_pct(m.wer)}" if m and m.cer is not None else "n/a")
            name = s.path.name + (" (partial)" if s.partial else "")
            p(f"{name[:30]:30} {s.language:8} {eng:9} " + " ".join(f"{c:>13}" for c in cells))
    # per language
    p("\n## Mean CER / WER per language, condition and engine")
    langs = sorted({s.language for s in samples})
    p(f"{'lang':8} {'engine':9} " + " ".join(f"{c:>13}" for c in conditions))
    for lang in langs:
        for eng in engines:
            cells = []
            for c in conditions:
                sel = [x for x in ms if x.language == lang and x.condition == c and x.engine == eng]
                cm, wm = _mean([x.cer for x in sel]), _mean([x.wer for x in sel])
                cells.append(f"{_pct(cm)}/{_pct(wm)}" if cm is not None else "n/a")
            p(f"{lang:8} {eng:9} " + " ".join(f"{c:>13}" for c in cells))
    # per condition
    p("\n## Mean CER per condition and engine (ratio to the original's CER)")
    p(f"{'condition':10} " + " ".join(f"{e:>22}" for e in engines))
    for c in conditions:
        cells = []
        for eng in engines:
            files = {x.file for x in ms if x.engine == eng and x.condition == c and x.cer is not None}
            cm = _mean([x.cer for x in ms if x.engine == eng and x.condition == c and x.file in files])
            om = _mean([x.cer for x in ms if x.engine == eng and x.condition == "original" and x.file in files])
            ratio = f"x{cm / om:.2f}" if cm is not None and om else "-"
            cells.append(f"{_pct(cm)} ({ratio})")
        p(f"{c:10} " + " ".join(f"{x:>22}" for x in cells))
    # speed
    p("\n## Seconds per page (mean over every run)")
    for eng in engines:
        secs = [x.seconds for x in ms if x.engine == eng]
        p(f"{eng:10} {(_mean(secs) or 0):.2f} s/page over {len(secs)} pages")
    # targets
    p("\n## Targets (printed text, full-page references)")
    for eng in engines:
        for lang, target in (("en/latin", 0.02), ("zh", 0.03)):
            full = {s.path.name for s in samples if s.language == lang}
            orig = _mean([x.cer for x in ms if x.engine == eng and x.language == lang and x.condition == "original"
                          and x.file in full])
            if orig is None:
                continue
            p(f"{eng:10} {lang:8} original CER {_pct(orig)} (target <= {100 * target:.0f}%): "
              f"{'OK' if orig <= target else 'SHORT'}")
            for c in ("tilt15", "tilt30", "tilt45", "lowlight"):
                cm = _mean([x.cer for x in ms if x.engine == eng and x.language == lang and x.condition == c])
                if cm is None:
                    continue
                ok = cm <= max(1.5 * orig, orig + 0.005)
                p(f"{'':10} {lang:8} {c:9} CER {_pct(cm)} (target <= 1.5x original): {'OK' if ok else 'SHORT'}")
    # tables
    p("\n## Table cell accuracy: camelot us-030.pdf page 2 vs us-030.expected.json")
    tables = {}
    for layer in (False, True):
        t = table_cell_accuracy(folder, use_text_layer=layer)
        tables["text layer" if layer else "OCR"] = t
        if t is None:
            p(f"  not found: {folder / 'tables' / 'camelot'} (us-030.pdf, us-030.expected.json)")
            break
        p(f"  {'text layer' if layer else 'OCR (rasterised)':18} {t['correct']}/{t['cells']} cells = "
          f"{100 * t['accuracy']:.1f}%  grid found {t.get('found_shape')} expected {t.get('expected_shape')} "
          f"({t['seconds']:.1f} s)")
    # invoices
    p("\n## Invoice field accuracy: invoice2data")
    inv = invoice_field_accuracy(folder)
    if not inv:
        p(f"  not found: {folder / 'docs' / 'invoice2data'}")
    for row in inv:
        marks = ", ".join(f"{k} {'ok' if v else 'WRONG'}" for k, v in row["checks"].items())
        p(f"  {row['file']:26} {row['mode']:10} {100 * row['accuracy']:5.1f}%  {marks}")
    if inv:
        p(f"  overall: {100 * sum(r['accuracy'] for r in inv) / len(inv):.1f}% of fields")
    return {"measurements": [asdict(m) for m in ms], "tables": tables, "invoices": inv}
