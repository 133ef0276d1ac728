"""Table structure before/after: the table finder of a baseline revision against today's, on the same OCR lines.

Every page of the public table sets (core.ocr.eval_tables.SETS, fetched into --extra; ../shared/eval's camelot
too) is read once with the pipeline (tables off); both finders then run on the same page image and lines, so
the figures differ only by the table code. Prints per set and mode: tables found, split, grid shape right,
TEDS, TEDS-S, cell accuracy, extra tables, and the table finder's milliseconds per page with the ratio today /
baseline. The baseline's core/ocr/tables.py is read from git (`git show REV:core/ocr/tables.py`).

    python benchmarks/ocr_tables.py --extra /tmp/evaldata --cache /tmp/ocr-lines     # lines kept for a re-run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def baseline_module(rev: str) -> types.ModuleType:
    """core/ocr/tables.py as it was at `rev`, as a module of its own."""
    source = subprocess.run(["git", "show", f"{rev}:core/ocr/tables.py"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    mod = types.ModuleType("tables_baseline")
    exec(compile(source, f"{rev}:core/ocr/tables.py", "exec"), mod.__dict__)  # noqa: S102 - our own file at rev
    return mod


def page_lines(file: Path, page: int, layer: bool, cache: Path | None) -> tuple[list[Any], Any]:
    """The page's lines (pipeline, tables off) and its image; lines kept as JSON in `cache` when given."""
    from core.ocr.eval_tables import DPI
    from core.ocr.loading import iter_pages
    from core.ocr.pipeline import OcrOptions, run_ocr
    from core.ocr.types import OcrLine

    pdf = file.suffix.lower() == ".pdf"
    spec = str(page + 1) if pdf else None
    image = next(iter_pages(file, spec, DPI, 10 ** 9, 10 ** 6, False)).image
    key = cache / f"{file.parent.name}-{file.name}.p{page}.{'layer' if layer else 'ocr'}.json" if cache else None
    if key is not None and key.exists():
        return [OcrLine(**ln) for ln in json.loads(key.read_text())], image
    res = run_ocr(file, OcrOptions(pages=spec, dpi=DPI, use_text_layer=layer, fields="off", tables=False))
    lines = res.pages[0].lines
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_text(json.dumps([ln.__dict__ for ln in lines]))
    return lines, image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extra", default=None, help="fetched sets (default $VLSCOPE_EVALDATA or /tmp/evaldata)")
    parser.add_argument("--shared", default=None, help="../shared/eval (for camelot); default: found beside")
    parser.add_argument("--baseline", default="70b9ff9", help="git revision of the baseline table finder")
    parser.add_argument("--cache", default=None, help="keep the OCR lines here between runs")
    parser.add_argument("--sets", default=None, help="comma-separated set names (default all found)")
    parser.add_argument("--limit", type=int, default=None, help="files per set")
    parser.add_argument("--json", default=None, help="also write every table's figures here")
    parser.add_argument("--lines-note", default="", help="printed in the header: which pipeline read the cached lines")
    args = parser.parse_args(argv)

    from core.ocr import eval_tables, tables as today
    from core.ocr.evaluate import default_eval_folder, default_extra

    before = baseline_module(args.baseline)
    extra = Path(args.extra) if args.extra else default_extra()
    shared = Path(args.shared) if args.shared else default_eval_folder()
    cache = Path(args.cache) if args.cache else None
    found: dict[str, Path] = {}
    for base in [b for b in (extra, shared) if b is not None]:
        for name, path in eval_tables.set_folders(base).items():
            found.setdefault(name, path)
    wanted = args.sets.split(",") if args.sets else list(found)
    print(f"# Table finder: baseline {args.baseline} vs today, same OCR lines{' (' + args.lines_note + ')' if args.lines_note else ''}"
          f"; sets: " + ", ".join(f"{n} ({found[n]})" for n in wanted if n in found))
    missing = [s.name for s in eval_tables.SETS if s.name not in found]
    if missing:
        print(f"  not found: {', '.join(missing)} (in {extra} and {shared})")
    timings: dict[str, list[float]] = {"baseline": [], "today": []}
    rows: dict[str, list[dict[str, Any]]] = {"baseline": [], "today": []}

    def finder(label: str, mod: types.ModuleType):
        def find(file: Path, pages: list[int], layer: bool):
            out = []
            secs = 0.0
            for pg in sorted(set(pages)):
                lines, image = page_lines(file, pg, layer, cache)
                t0 = time.perf_counter()
                out += mod.find_tables(image, lines, pg)
                dt = time.perf_counter() - t0
                secs += dt
                timings[label].append(dt)
            return out, secs
        return find

    t_all = time.perf_counter()
    for name in wanted:
        if name not in found:
            continue
        for label, mod in (("baseline", before), ("today", today)):
            rows[label] += eval_tables.tables_report(found[name].parent, limit=args.limit, sets=[name],
                                                     finder=finder(label, mod))
    summary = {k: eval_tables.summarise(v) for k, v in rows.items()}
    head = (f"{'set':19} {'mode':10} {'finder':8} {'tables':>6} {'found':>5} {'split':>5} {'shape ok':>8} "
            f"{'TEDS':>6} {'TEDS-S':>6} {'cells ok':>8} {'extra':>5}")
    print(head)
    print("-" * len(head))
    for b, t in zip(summary["baseline"], summary["today"]):
        for label, s in (("baseline", b), ("today", t)):
            print(f"{s['set']:19} {s['mode']:10} {label:8} {s['tables']:6} {s['found']:5} {s['split']:5} "
                  f"{s['shape_right']:8} {s['teds']:6.3f} {s['teds_struct']:6.3f} {100 * s['cell_accuracy']:7.1f}% "
                  f"{s['extra_tables']:5}")
    for label in ("baseline", "today"):
        allrows = rows[label]
        cells = sum(r["cells"] for r in allrows)
        print(f"all sets, {label:8}: {len(allrows)} tables, found {sum(r['found'] for r in allrows)}, shape right "
              f"{sum(r['shape_right'] for r in allrows)}, TEDS {sum(r['teds'] for r in allrows) / max(len(allrows), 1):.3f}"
              f", cells ok {100 * sum(r['cells_right'] for r in allrows) / max(cells, 1):.1f}%")
    ms = {k: 1000 * sum(v) / max(len(v), 1) for k, v in timings.items()}
    print(f"table finder: baseline {ms['baseline']:.1f} ms/page, today {ms['today']:.1f} ms/page, "
          f"ratio today/baseline x{ms['today'] / max(ms['baseline'], 1e-9):.2f} over {len(timings['today'])} pages")
    print(f"wall {time.perf_counter() - t_all:.0f} s (OCR of the pages included unless cached)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
