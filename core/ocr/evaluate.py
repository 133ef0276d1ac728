"""Accuracy measurement: CER/WER, the evaluation-set report (`vlscope ocr eval`), table cell accuracy
and invoice field accuracy. Reads a folder laid out like ../shared/eval; never special-cases a file."""

from __future__ import annotations

import json
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


def run_eval(folder: Path, engines: list[str] | None = None, conditions: list[str] | None = None,
             limit: int | None = None, out: TextIO = sys.stdout, json_path: Path | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Measure everything and print the report tables; returns the measurements as a dict."""
    engines = engines or ["rapidocr", "tesseract"]
    conditions = conditions or list(CONDITIONS)
    for c in conditions:
        if c not in CONDITIONS:
            raise ValueError(f"unknown condition {c!r}; choose from {', '.join(CONDITIONS)}")
    samples = collect_samples(folder)
    if limit:
        samples = samples[:limit]
    p = lambda s: print(s, file=out, flush=True)  # noqa: E731
    p(f"# OCR accuracy report: {folder}")
    p(f"{len(samples)} files x {len(conditions)} conditions x {len(engines)} engines "
      f"({', '.join(engines)}); CER/WER in %, lower is better; partial = only some lines are annotated")
    ms = measure(samples, engines, conditions, log=(lambda s: print("  " + s, file=sys.stderr, flush=True))
                 if progress else (lambda s: None))
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
            p("  (tables/camelot not found)")
            break
        p(f"  {'text layer' if layer else 'OCR (rasterised)':18} {t['correct']}/{t['cells']} cells = "
          f"{100 * t['accuracy']:.1f}%  grid found {t.get('found_shape')} expected {t.get('expected_shape')} "
          f"({t['seconds']:.1f} s)")
    # invoices
    p("\n## Invoice field accuracy: invoice2data")
    inv = invoice_field_accuracy(folder)
    for row in inv:
        marks = ", ".join(f"{k} {'ok' if v else 'WRONG'}" for k, v in row["checks"].items())
        p(f"  {row['file']:26} {row['mode']:10} {100 * row['accuracy']:5.1f}%  {marks}")
    if inv:
        p(f"  overall: {100 * sum(r['accuracy'] for r in inv) / len(inv):.1f}% of fields")
    result = {"measurements": [asdict(m) for m in ms], "tables": tables, "invoices": inv}
    if json_path:
        json_path.write_text(json.dumps(result, ensure_ascii=False, indent=1, default=str))
    return result
