"""Reading accuracy against the plain engine: CER per script of VLScope's reading and of the engine it wraps,
run plainly on the same files (a column each), and seconds per item.

`reading_report(folder)` measures the evaluation folder laid out like ../shared/eval (its `ocr/` sets) and
the public line and page sets of READING_SETS, when their files were fetched to `extra` (default
/tmp/evaldata/<set>/: images beside `<name>.gt.txt`; the repository keeps only their names and commits).
Vertical Japanese pages are composed from the vertical line set (2 tiers of columns, and a two-page spread):
their ground truth is the lines in reading order, so it holds by construction.

The plain engine is what a user gets from the engine alone: RapidOCR's own call (detection, line classifier,
recognition) for the scripts it reads, `tesseract -l <pack> --psm <mode>` for the others, the mode chosen
from the image's layout (7 one line, 6 one block, 11 sparse, 3 a page, 5 vertical). Never special-cases a file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.ocr.evaluate import cer, collect_samples
from core.ocr.scripts import detect_script, script_language

READING_SETS: tuple[dict[str, str], ...] = (
    {"set": "openarabic-gs", "repo": "OpenArabic/OCR_GS_Data", "commit": "43eee6f4f1f5bf052400f12dec8189d5cf9f2c1b",
     "path": "ara/<book>/7_final/<n>.png + .gt.txt (6 lines of each of 7 books)", "script": "Arabic", "lang": "ar",
     "what": "printed Arabic book lines, double-checked gold standard"},
    {"set": "sanplusminus-deva", "repo": "Shreeshrii/tesstrain-sanPlusMinus",
     "commit": "120bb5a278f06501f110db2708a2b8b16f8e8886",
     "path": "data/sanPlusMinus-ground-truth/{shreelipi,SSM,san-sandocs}/*.png + .gt.txt (12 of each)",
     "script": "Devanagari", "lang": "sa", "what": "printed Sanskrit lines (scanned pages and rendered fonts)"},
    {"set": "jpn-vert-lines", "repo": "NbtKmy/jpn_vert_improvement", "commit": "7e3133790a45766c99d8b0975d20c9ce917e89fb",
     "path": "training_data/traindata_{1,2,3}/image/<n>.tif + text/<n>.gt.txt (10 of each)", "script": "Japanese",
     "lang": "ja", "what": "vertical Japanese lines (tategaki columns); pages are composed from them"},
)
EVAL_DATA = Path("/tmp/evaldata")
VERTICAL_PAGE_COLUMNS = 4  # columns per tier of a composed vertical page
PLAIN_PACKS = {"Arabic": "ara", "Devanagari": "san+hin", "Cyrillic": "rus", "Hangul": "kor"}


@dataclass
class Item:
    """One image with its reference text: the set it is from, its script, the hint a user would give."""

    set: str
    name: str
    image: np.ndarray
    reference: str
    script: str
    lang: str | None
    partial: bool = False


def _load(path: Path) -> np.ndarray:
    from core.ocr.loading import load_image

    return load_image(path.read_bytes())


def _line_items(root: Path, spec: dict[str, str], limit: int | None) -> list[Item]:
    folder = root / spec["set"]
    out: list[Item] = []
    if not folder.is_dir():
        return out
    for gt in sorted(folder.glob("*.gt.txt")):
        stem = gt.name[:-len(".gt.txt")]
        img = next((p for p in (folder / f"{stem}{ext}" for ext in (".png", ".tif", ".jpg")) if p.exists()), None)
        if img is None:
            continue
        ref = gt.read_text(encoding="utf-8").strip()
        if ref:
            out.append(Item(spec["set"], stem, _load(img), ref, spec["script"], spec["lang"]))
        if limit and len(out) >= limit:
            break
    return out


def compose_vertical_pages(columns: list[tuple[np.ndarray, str]], per_tier: int = VERTICAL_PAGE_COLUMNS,
                           scale: float = 0.5) -> list[tuple[str, np.ndarray, str]]:
    """Vertical pages made of vertical line images: each page two tiers of `per_tier` columns (right to left,
    top tier first), and one two-page spread of the first two pages (right page first). Returns
    (name, image, reference in reading order)."""
    import cv2

    cols = []
    for img, ref in columns:
        g = cv2.resize(img, (max(1, int(img.shape[1] * scale)), max(1, int(img.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
        cols.append((g, ref))
    pages: list[tuple[str, np.ndarray, str]] = []
    per_page = 2 * per_tier
    for k in range(len(cols) // per_page):
        chunk = cols[k * per_page:(k + 1) * per_page]
        tiers, refs = [], []
        for t in range(2):
            tier = chunk[t * per_tier:(t + 1) * per_tier]
            h = max(c.shape[0] for c, _ in tier)
            strips = [np.vstack([c, np.full((h - c.shape[0], c.shape[1], 3), 255, np.uint8)]) for c, _ in tier]
            tiers.append(np.hstack(strips[::-1]))  # the first column on the right
            refs.extend(r for _, r in tier)
        w = max(t.shape[1] for t in tiers)
        gap = np.full((60, w, 3), 255, np.uint8)
        page = np.vstack([tiers[0], gap, tiers[1]])
        page = cv2.copyMakeBorder(page, 40, 40, 40, 40, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        pages.append((f"page{k + 1}", page, "\n".join(refs)))
    if len(pages) >= 2:
        (_, right, r1), (_, left, r2) = pages[0], pages[1]
        h = max(right.shape[0], left.shape[0])
        pad = lambda a: np.vstack([a, np.full((h - a.shape[0], a.shape[1], 3), 255, np.uint8)])  # noqa: E731
        spread = np.hstack([pad(left), np.full((h, 80, 3), 255, np.uint8), pad(right)])
        pages.append(("spread", spread, r1 + "\n" + r2))
    return pages


def collect_items(folder: Path | None, extra: Path | None = EVAL_DATA, limit: int | None = None) -> list[Item]:
    """The items measured: the evaluation folder's OCR sets, the READING_SETS line sets found under `extra`,
    and vertical pages composed from the vertical line set."""
    items: list[Item] = []
    if folder is not None and (folder / "ocr").is_dir():
        for s in collect_samples(folder):
            script = detect_script(s.reference) or "Latin"
            items.append(Item(f"eval/{s.path.parent.name}", s.path.name, _load(s.path), s.reference, script, None,
                              s.partial))
    if extra is not None and extra.is_dir():
        for spec in READING_SETS:
            lines = _line_items(extra, spec, limit)
            items.extend(lines)
            if spec["set"] == "jpn-vert-lines":
                for name, img, ref in compose_vertical_pages([(it.image, it.reference) for it in lines]):
                    items.append(Item("jpn-vert-pages", name, img, ref, "Japanese", spec["lang"]))
    return items


def plain_reading(image: np.ndarray, script: str, vertical: bool = False) -> str:
    """The engine alone on the image as it is: RapidOCR's own call for the scripts it reads, else tesseract with
    the script's pack in the layout mode of the image."""
    from core.ocr.preprocess import analyse_layout

    if script in PLAIN_PACKS:
        from core.ocr.engines import TesseractEngine

        psm = analyse_layout(image).psm
        return "\n".join(ln.text for ln in TesseractEngine().read(image, pack=PLAIN_PACKS[script], psm=psm).lines)
    import cv2

    from core.ocr.rapid import run_rapidocr

    r = run_rapidocr(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return "\n".join(t for t in (getattr(r, "txts", None) or ()) if t.strip())


def _vlscope(image: np.ndarray, lang: str | None) -> str:
    from core.ocr.pipeline import OcrOptions, ocr_image

    return ocr_image(image, OcrOptions(lang=lang, tables=False, fields="off")).text


def measure_items(items: list[Item], hint: bool = True,
                  progress: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """One row per item: CER of VLScope without a hint (auto), with the set's hint (when `hint`), and of the
    plain engine, with the seconds each took."""
    rows = []
    if items:  # warm-up, untimed: the engines' models load on first use
        _vlscope(items[0].image, items[0].lang)
        plain_reading(items[0].image, items[0].script)
    for i, it in enumerate(items):
        if progress:
            progress(i, len(items), f"{it.set}/{it.name}")
        t0 = time.perf_counter()
        auto = _vlscope(it.image, None)
        t1 = time.perf_counter()
        plain = plain_reading(it.image, it.script)
        t2 = time.perf_counter()
        row = {"set": it.set, "name": it.name, "script": it.script,
               "cer_vlscope": round(cer(it.reference, auto, it.partial), 4),
               "cer_plain": round(cer(it.reference, plain, it.partial), 4),
               "s_vlscope": round(t1 - t0, 3), "s_plain": round(t2 - t1, 3)}
        if hint and it.lang:
            t3 = time.perf_counter()
            hinted = _vlscope(it.image, it.lang)
            row["cer_vlscope_hint"] = round(cer(it.reference, hinted, it.partial), 4)
            row["s_vlscope_hint"] = round(time.perf_counter() - t3, 3)
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by set and script: mean CER of each column, items where VLScope reads worse than the plain
    engine (by more than 0.02), mean seconds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["set"], r["script"]), []).append(r)
    out = []
    for (set_, script), rs in groups.items():
        mean = lambda k: round(sum(r[k] for r in rs) / len(rs), 4) if all(k in r for r in rs) else None  # noqa: E731
        out.append({"set": set_, "script": script, "language": script_language(script), "items": len(rs),
                    "cer_vlscope": mean("cer_vlscope"), "cer_vlscope_hint": mean("cer_vlscope_hint"),
                    "cer_plain": mean("cer_plain"),
                    "worse_than_plain": sum(r["cer_vlscope"] > r["cer_plain"] + 0.02 for r in rs),
                    "s_vlscope": mean("s_vlscope"), "s_vlscope_hint": mean("s_vlscope_hint"),
                    "s_plain": mean("s_plain")})
    return out


def reading_report(folder: Path | str | None, extra: Path | str | None = EVAL_DATA, limit: int | None = None,
                   hint: bool = True, progress: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """CER per set and script of VLScope (auto, and with the set's hint) against the plain engine on the same
    files, and seconds per item: the evaluation folder's OCR sets plus the public sets fetched to `extra`
    (READING_SETS; at most `limit` items of each). An empty list when neither folder holds anything."""
    items = collect_items(Path(folder) if folder else None, Path(extra) if extra else None, limit)
    return summarise(measure_items(items, hint=hint, progress=progress))


def format_report(rows: list[dict[str, Any]]) -> str:
    """The report as a fixed-width table."""
    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    head = ["set", "script", "items", "cer_vlscope", "cer_vlscope_hint", "cer_plain", "worse_than_plain",
            "s_vlscope", "s_vlscope_hint", "s_plain"]
    table = [head] + [[f(r.get(k)) for k in head] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)) for row in table)
