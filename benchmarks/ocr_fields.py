"""Invoice fields and PDF text layers, before and after, on public files (not a test: prints figures).

    python benchmarks/ocr_fields.py [--eval ../shared/eval] [--extra /tmp/evaldata] [--cache /tmp/evaldata/cache]

1. PDF text layers: lines per page and the share of one-character lines, as read before (PDFium's text
   rectangles) and now (core.ocr.textlayer), with the seconds each took, on every PDF found.
2. Fields: exact match per field (core.ocr.eval_fields) with the fields code of BASELINE_COMMIT (and its
   text-layer reading) against the current one, on the same OCR text (OCR results are kept in --cache).

The extra sets (names and commits in core.ocr.eval_fields.SETS) are fetched by hand into --extra; the
shared eval folder holds invoice2data. Raw output: benchmarks/results/2026-12-02-ocr-fields.txt.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASELINE_COMMIT = "70b9ff9"  # the fields code (core/ocr/invoice.py) before issue 15


def baseline_extract():
    """extract_fields of core/ocr/invoice.py at BASELINE_COMMIT (from git), or None without git."""
    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:core/ocr/invoice.py"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("baseline_invoice")
    exec(compile(src, f"{BASELINE_COMMIT}:core/ocr/invoice.py", "exec"), mod.__dict__)  # noqa: S102 - our own code
    return mod.extract_fields


def main() -> int:
    from core.cache import ResultCache
    from core.ocr.eval_fields import (SETS, default_extra, fields_report, format_summary, rect_layer_result,
                                      summarise, text_layer_report)

    parser = argparse.ArgumentParser()
    parser.add_argument("--eval", default=str(ROOT.parent / "shared" / "eval"))
    parser.add_argument("--extra", default=str(default_extra()))
    parser.add_argument("--cache", default=str(default_extra() / "cache"))
    args = parser.parse_args()
    folder, extra = Path(args.eval), Path(args.extra)
    print(f"# Invoice fields and PDF text layers: {folder} + {extra}")
    for name, (repo, commit, where) in SETS.items():
        print(f"  set {name}: {repo} @ {commit[:7]} ({where})")

    pdfs = sorted({p.name: p for p in list((folder / "docs" / "invoice2data").glob("*.pdf")) +
                   list((extra / "invoice2data").glob("*.pdf")) + list((extra / "zugferd").glob("*.pdf")) +
                   list((folder / "tables").glob("*/*.pdf"))}.values())
    print(f"\n## PDF text layers: {len(pdfs)} PDFs, up to 3 pages each, at 200 DPI")
    rows = text_layer_report(pdfs)
    print(f"{'file':52} {'page':>4} {'lines before':>12} {'1-char before':>13} {'lines now':>9} {'1-char now':>10} "
          f"{'verdict':>8}")
    for r in rows:
        b, a = r["before"], r["after"]
        print(f"{r['file'][:52]:52} {r['page']:>4} {b['lines']:>12} {b['one_char_share']:>13.3f} {a['lines']:>9} "
              f"{a['one_char_share']:>10.3f} {'used' if a['usable'] else 'OCR':>8}")
    n = len(rows)
    lb, la = sum(r["before"]["lines"] for r in rows), sum(r["after"]["lines"] for r in rows)
    ob, oa = sum(r["before"]["one_char_lines"] for r in rows), sum(r["after"]["one_char_lines"] for r in rows)
    worst_b = max(rows, key=lambda r: r["before"]["one_char_share"])
    worst_a = max(rows, key=lambda r: r["after"]["one_char_share"])
    tb, ta = sum(r["before_s"] for r in rows), sum(r["after_s"] for r in rows)
    print(f"\n{n} pages: lines per page {lb / n:.1f} before, {la / n:.1f} now; one-character lines {ob} "
          f"({ob / max(lb, 1):.1%}) before, {oa} ({oa / max(la, 1):.1%}) now")
    print(f"pages with more than half their lines one character: "
          f"{sum(r['before']['one_char_share'] > 0.5 for r in rows)} before, "
          f"{sum(r['after']['one_char_share'] > 0.5 for r in rows)} now; worst page "
          f"{worst_b['file']} p{worst_b['page']} {worst_b['before']['one_char_lines']}/{worst_b['before']['lines']} before, "
          f"{worst_a['file']} p{worst_a['page']} {worst_a['after']['one_char_lines']}/{worst_a['after']['lines']} now")
    print(f"seconds for all pages: {tb:.2f} before, {ta:.2f} now (x{ta / max(tb, 1e-9):.1f})")
    print(f"words now: {sum(r['words'] for r in rows)}, of which not a word of PDFium's own text (split at its "
          f"spaces): {sum(r['words_not_in_pdfium_text'] for r in rows)}")

    cache = ResultCache(args.cache)
    print("\n## Fields: exact match per field, right/of (was: the baseline's count on the same text)")
    t0 = time.perf_counter()
    now = fields_report(folder, extra, cache=cache, log=lambda s: print("  " + s, file=sys.stderr, flush=True))
    t_now = time.perf_counter() - t0
    old_extract = baseline_extract()
    if old_extract is None:
        print("(no git: the baseline is left out)")
        print(format_summary(now))
    else:
        t0 = time.perf_counter()
        before = fields_report(folder, extra, cache=cache, extract=old_extract, text_layer=rect_layer_result)
        t_before = time.perf_counter() - t0
        print(format_summary(now, before))
        right_now = sum(r["right"] for r in summarise(now))
        right_before = sum(r["right"] for r in summarise(before))
        total = sum(r["of"] for r in summarise(now))
        print(f"\nall fields: {right_now}/{total} now, {right_before}/{total} before; seconds {t_now:.1f} now, "
              f"{t_before:.1f} before (OCR from the cache after the first run)")
    print("\n## Misses now (file, mode: field expected -> got)")
    for r in now:
        bad = [f"{k}: {r['expected'][k]!r} -> {r['got'].get(k)!r}" for k, ok in r["checks"].items() if not ok]
        if bad or r["error"]:
            print(f"{r['set']}/{r['file']} ({r['mode']}): " + "; ".join(bad) + (f" ERROR {r['error']}" if r["error"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
