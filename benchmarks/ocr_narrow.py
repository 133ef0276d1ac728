"""The reading evaluation with the document engine's wide line crops at full width and narrowed (issue 15, speed):
core.ocr.eval_reading's items (the evaluation folder's OCR sets and the line sets under --extra), CER per set and
script for each, and the items whose CER changed. Not a test.

    PYTHONPATH=. .venv/bin/python benchmarks/ocr_narrow.py [--eval ../shared/eval]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from core.ocr import engines, rapid
    from core.ocr.eval_reading import collect_items, measure_items, summarise

    ap = argparse.ArgumentParser()
    ap.add_argument("--eval", default=str(Path(__file__).resolve().parents[2] / "shared" / "eval"))
    args = ap.parse_args()
    items = collect_items(Path(args.eval))
    runs = {}
    for narrow in (1.0, rapid.NARROW):
        engines.NARROW = narrow
        t0 = time.perf_counter()
        rows = measure_items(items, hint=False)
        runs[narrow] = (time.perf_counter() - t0, summarise(rows), rows)
        print(narrow, f"{runs[narrow][0]:.1f} s", flush=True)
    full, narrowed = runs[1.0], runs[rapid.NARROW]
    for s0, s1 in zip(full[1], narrowed[1]):
        print(f'{s0["set"]:28s} {s0["script"]:10s} n={s0["items"]:3d}  cer full {s0["cer_vlscope"]}  narrowed '
              f'{s1["cer_vlscope"]}  plain {s0["cer_plain"]}')
    print("items whose CER changed (full -> narrowed; seconds full -> narrowed):")
    before = {(r["set"], r["name"]): r for r in full[2]}
    for r in narrowed[2]:
        a = before[(r["set"], r["name"])]
        if abs(a["cer_vlscope"] - r["cer_vlscope"]) > 1e-4:
            print(" ", r["set"], r["name"], a["cer_vlscope"], "->", r["cer_vlscope"], ";", a["s_vlscope"], "->",
                  r["s_vlscope"])


if __name__ == "__main__":
    main()
