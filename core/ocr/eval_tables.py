"""Table measurement: detection, grid shape, TEDS and cell accuracy on public sets with ground-truth structure.

`tables_report(folder)` reads the sets it finds under `folder` (each in a sub-folder of its name, laid out
as upstream ships it; the files are never kept in this repository) and returns one dict per ground-truth
table: found, split, shape, TEDS, TEDS-S (structure only), cell accuracy, seconds. `summarise(rows)` folds
them into one line per set and mode. Nothing here special-cases a file.

The sets (name, repository @ commit, upstream path):
"""

from __future__ import annotations

import json
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from core.ocr.teds import Node, cell_accuracy, grid_tree, html_tree, pubtabnet_tree, shape_of, table_tree, teds
from core.ocr.types import Table


@dataclass(frozen=True)
class TableSet:
    """A public set of tables with ground truth: where it comes from and what it holds."""

    name: str
    repository: str
    commit: str
    path: str
    what: str


SETS: tuple[TableSet, ...] = (
    TableSet("pubtabnet_examples", "ibm-aur-nlp/PubTabNet", "8ffde9024bd331f5a61c3c549fdf30dd3c3e43a5", "examples/",
             "20 table images cropped from PubMed Central papers (ruled, unruled, spanning headers); "
             "ground truth PubTabNet_Examples.jsonl (structure tokens and cell text)"),
    TableSet("pubtabnet_valmini", "ibm-aur-nlp/PubTabNet", "8ffde9024bd331f5a61c3c549fdf30dd3c3e43a5",
             "ICDAR_SLR_competition/val_mini.zip + src/sample_gt.json",
             "20 more table images from papers (ICDAR 2021 competition mini validation set); ground truth "
             "sample_gt.json (HTML)"),
    TableSet("icdar2013", "tabulapdf/tabula-java", "2cdf3b4fd3f7e921dca8cc6814cdd9316be40f0f",
             "src/test/resources/technology/tabula/icdar2013-dataset/",
             "ICDAR 2013 table competition: 67 PDFs of EU and US government documents, 158 table regions (some tables run over two "
             "pages, two pages turned 90 degrees); ground truth <name>-str.xml (cells with row/column spans) and "
             "<name>-reg.xml (table regions)"),
    TableSet("camelot", "camelot-dev/camelot", "2b80d0b", "tests/files/",
             "us-030.pdf page 2, one ruled table; ground truth us-030.expected.json (../shared/eval/tables/camelot)"),
)

__doc__ += "\n".join(f"- {s.name}: {s.repository} @ {s.commit[:7]}, {s.path}" for s in SETS) + "\n"

DPI = 200


@dataclass
class Truth:
    """One ground-truth table: its tree, and where it lies (page, box in page pixels; None = the whole image)."""

    set: str
    item: str
    tree: Node
    page: int = 0
    box: list[float] | None = None


# ---- reading the sets ---------------------------------------------------------------------------------------------

def set_folders(folder: Path) -> dict[str, Path]:
    """The sets present under folder (or under folder/tables, as in ../shared/eval): name -> folder."""
    found: dict[str, Path] = {}
    for base in (folder, folder / "tables"):
        for s in SETS:
            p = base / s.name
            if s.name not in found and p.is_dir():
                found[s.name] = p
    return found


def _pubtabnet_examples(path: Path) -> Iterator[tuple[Path, list[Truth]]]:
    ann = path / "PubTabNet_Examples.jsonl"
    if not ann.exists():
        return
    for line in ann.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        img = path / d["filename"]
        if img.exists():
            tree = pubtabnet_tree(d["html"]["structure"]["tokens"], [c["tokens"] for c in d["html"]["cells"]])
            yield img, [Truth("pubtabnet_examples", d["filename"], tree)]


def _pubtabnet_valmini(path: Path) -> Iterator[tuple[Path, list[Truth]]]:
    gt_file = path / "sample_gt.json"
    if not gt_file.exists():
        return
    gt = json.loads(gt_file.read_text(encoding="utf-8"))
    images = path
    zipped = path / "val_mini.zip"
    if zipped.exists() and not any(path.glob("*.png")):
        # the images as upstream ships them, in their zip: read from a copy in the temporary folder
        images = Path(tempfile.gettempdir()) / "vlscope-pubtabnet-valmini"
        images.mkdir(exist_ok=True)
        with zipfile.ZipFile(zipped) as z:
            for info in z.infolist():
                name = Path(info.filename).name
                if name.endswith(".png") and name in gt and not (images / name).exists():
                    (images / name).write_bytes(z.read(info))
    for name in sorted(gt):
        img = images / name
        if img.exists():
            yield img, [Truth("pubtabnet_valmini", name, html_tree(gt[name]["html"]))]


def _icdar_regions(reg: Path) -> dict[tuple[str, str], tuple[int, list[float]]]:
    """(table id, region id) -> (1-based page, [x1, y1, x2, y2] in PDF points)."""
    out: dict[tuple[str, str], tuple[int, list[float]]] = {}
    if not reg.exists():
        return out
    root = ET.parse(reg).getroot()
    for t in root.iter("table"):
        for r in t.iter("region"):
            bb = r.find("bounding-box")
            if bb is not None:
                out[(t.get("id", ""), r.get("id", ""))] = (int(r.get("page", "1")), [
                    float(bb.get(k, "0")) for k in ("x1", "y1", "x2", "y2")])
    return out


def _pdf_to_pixels(box_pt: list[float], height_pt: float, scale: float) -> list[float]:
    """A box in PDF points, y up, on the page as displayed (ICDAR 2013 gives a page turned by /Rotate in its
    turned frame), in the pixels of the page rendered at `scale`."""
    x1, y1, x2, y2 = box_pt
    return [x1 * scale, (height_pt - max(y1, y2)) * scale, x2 * scale, (height_pt - min(y1, y2)) * scale]


def icdar_truths(pdf: Path) -> list[Truth]:
    """Every table region of an ICDAR 2013 document (a table over two pages gives two), boxes in page pixels."""
    import pypdfium2 as pdfium

    stem = pdf.name[:-4]
    str_xml = pdf.with_name(stem + "-str.xml")
    if not str_xml.exists():
        return []
    regions = _icdar_regions(pdf.with_name(stem + "-reg.xml"))
    doc = pdfium.PdfDocument(str(pdf))
    out: list[Truth] = []
    try:
        root = ET.parse(str_xml).getroot()
        for t in root.iter("table"):
            for r in t.iter("region"):
                page = int(r.get("page", "1"))
                cells = []
                for c in r.iter("cell"):
                    sr, sc = int(c.get("start-row", "0")), int(c.get("start-col", "0"))
                    er, ec = int(c.get("end-row", sr)), int(c.get("end-col", sc))
                    text = " ".join((c.findtext("content") or "").split())
                    cells.append((sr, sc, er, ec, text))
                if not cells or page > len(doc):
                    continue
                r0, c0 = min(x[0] for x in cells), min(x[1] for x in cells)
                nr = max(x[2] for x in cells) - r0 + 1
                nc = max(x[3] for x in cells) - c0 + 1
                rows = [["" for _ in range(nc)] for _ in range(nr)]
                spans: dict[tuple[int, int], tuple[int, int]] = {}
                for sr, sc, er, ec, text in cells:
                    rows[sr - r0][sc - c0] = text
                    if er > sr or ec > sc:
                        spans[(sr - r0, sc - c0)] = (er - sr + 1, ec - sc + 1)
                reg = regions.get((t.get("id", ""), r.get("id", "")))
                if reg is None:
                    boxes = [[float(b.get(k, "0")) for k in ("x1", "y1", "x2", "y2")] for b in r.iter("bounding-box")]
                    reg = (page, [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                                  max(b[3] for b in boxes)])
                p = doc[page - 1]
                box = _pdf_to_pixels(reg[1], float(p.get_size()[1]), DPI / 72.0)
                out.append(Truth("icdar2013", f"{pdf.name} p{page}", grid_tree(rows, spans), page - 1, box))
    finally:
        doc.close()
    return out


def _icdar(path: Path) -> Iterator[tuple[Path, list[Truth]]]:
    for pdf in sorted(path.glob("*/*.pdf")) + sorted(path.glob("*.pdf")):
        truths = icdar_truths(pdf)
        if truths:
            yield pdf, truths


def _camelot(path: Path) -> Iterator[tuple[Path, list[Truth]]]:
    pdf, exp = path / "us-030.pdf", path / "us-030.expected.json"
    if pdf.exists() and exp.exists():
        rows = json.loads(exp.read_text())["cells"]["rows"]
        yield pdf, [Truth("camelot", "us-030.pdf p2", grid_tree(rows), 1, None)]


READERS: dict[str, Callable[[Path], Iterator[tuple[Path, list[Truth]]]]] = {
    "pubtabnet_examples": _pubtabnet_examples, "pubtabnet_valmini": _pubtabnet_valmini, "icdar2013": _icdar,
    "camelot": _camelot}


# ---- scoring ----------------------------------------------------------------------------------------------------

def _area(b: list[float]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _inter(a: list[float], b: list[float]) -> float:
    return _area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])


def assign(found: list[Table], truths: list[Truth]) -> tuple[dict[int, list[Table]], list[Table]]:
    """Found tables given to the truth they overlap most (half of either box); returns (by truth, unmatched).
    A truth without a box (a cropped table image, a page with one table) takes every table found: several
    are one table split; on a page with one table and no box, only the table most like it is taken."""
    by: dict[int, list[Table]] = {i: [] for i in range(len(truths))}
    extra: list[Table] = []
    for t in found:
        best, best_v = None, 0.0
        for i, tr in enumerate(truths):
            if tr.page != t.page:
                continue
            if tr.box is None:
                best, best_v = i, 1.0
                break
            v = _inter(t.box, tr.box)
            if v >= 0.5 * min(_area(t.box), _area(tr.box)) and v > best_v:
                best, best_v = i, v
        if best is None:
            extra.append(t)
        else:
            by[best].append(t)
    return by, extra


def score(found: list[Table], truth: Truth, whole_image: bool) -> dict[str, Any]:
    """One truth against the tables given to it: found, split, shape, TEDS, TEDS-S, cells right."""
    cells_total = cell_accuracy(truth.tree, truth.tree)[1]
    if not found:
        return {"found": False, "split": False, "shape": None, "expected_shape": list(shape_of(truth.tree)),
                "shape_right": False, "teds": 0.0, "teds_struct": 0.0, "cells_right": 0, "cells": cells_total}
    if whole_image or truth.box is not None:
        pred = table_tree(sorted(found, key=lambda t: t.box[1]))
    else:  # a page with one table and no box: the most similar table found
        pred = max((table_tree(t) for t in found), key=lambda tree: teds(tree, truth.tree, structure_only=True))
    right, total = cell_accuracy(pred, truth.tree)
    shape, expected = shape_of(pred), shape_of(truth.tree)
    split = len(found) > 1 and (whole_image or truth.box is not None)
    return {"found": True, "split": split,
            "shape": list(shape), "expected_shape": list(expected), "shape_right": shape == expected,
            "teds": teds(pred, truth.tree), "teds_struct": teds(pred, truth.tree, structure_only=True),
            "cells_right": right, "cells": total}


# ---- running ----------------------------------------------------------------------------------------------------

def _read_tables(path: Path, pages: list[int], use_text_layer: bool) -> tuple[list[Table], float]:
    from core.ocr.pipeline import OcrOptions, run_ocr

    t0 = time.perf_counter()
    spec = ",".join(str(p + 1) for p in sorted(set(pages))) if path.suffix.lower() == ".pdf" else None
    res = run_ocr(path, OcrOptions(pages=spec, dpi=DPI, use_text_layer=use_text_layer, fields="off"))
    return res.tables, time.perf_counter() - t0


def tables_report(folder: Path, limit: int | None = None, sets: list[str] | None = None,
                  log: Callable[[str], None] = lambda s: None,
                  finder: Callable[[Path, list[int], bool], tuple[list[Table], float]] | None = None
                  ) -> list[dict[str, Any]]:
    """One dict per ground-truth table of every set found under `folder`: set, mode, item, found, split, shape,
    expected_shape, shape_right, teds, teds_struct, cells_right, cells, seconds (of its file, shared between
    the tables of that file), extra_tables (tables found outside every truth of its file, on the first).
    PDFs are measured twice: rasterised and OCRed, and from their text layer. `limit`: files per set."""
    finder = finder or _read_tables
    out: list[dict[str, Any]] = []
    folders = set_folders(folder)
    for name, path in folders.items():
        if sets and name not in sets:
            continue
        for n, (file, truths) in enumerate(READERS[name](path)):
            if limit is not None and n >= limit:
                break
            pdf = file.suffix.lower() == ".pdf"
            for layer in ((False, True) if pdf else (False,)):
                mode = "text layer" if layer else "OCR"
                try:
                    found, secs = finder(file, [t.page for t in truths], layer)
                    error = ""
                except Exception as exc:  # noqa: BLE001 - one bad file is reported, the report goes on
                    found, secs, error = [], 0.0, f"{type(exc).__name__}: {exc}"
                by, extra = assign(found, truths)
                for i, tr in enumerate(truths):
                    row = {"set": name, "mode": mode, "item": tr.item, "file": str(file),
                           **score(by[i], tr, whole_image=not pdf), "seconds": secs / len(truths),
                           "extra_tables": len(extra) if i == 0 else 0, "error": error}
                    out.append(row)
                    log(f"{name:18} {mode:10} {tr.item:28} found {row['found']!s:5} shape {row['shape']} "
                        f"(expected {row['expected_shape']}) TEDS {row['teds']:.2f} {error[:60]}")
    return out


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary per (set, mode): tables, found, split, shape right, mean TEDS and TEDS-S, cell accuracy,
    extra tables, seconds per file."""
    keys: list[tuple[str, str]] = []
    for r in rows:
        if (r["set"], r["mode"]) not in keys:
            keys.append((r["set"], r["mode"]))
    out = []
    for s, m in keys:
        sel = [r for r in rows if r["set"] == s and r["mode"] == m]
        cells = sum(r["cells"] for r in sel)
        files = len({r["file"] for r in sel})
        out.append({"set": s, "mode": m, "tables": len(sel), "found": sum(r["found"] for r in sel),
                    "split": sum(r["split"] for r in sel), "shape_right": sum(r["shape_right"] for r in sel),
                    "teds": float(np.mean([r["teds"] for r in sel])),
                    "teds_struct": float(np.mean([r["teds_struct"] for r in sel])),
                    "cell_accuracy": sum(r["cells_right"] for r in sel) / cells if cells else 0.0,
                    "extra_tables": sum(r["extra_tables"] for r in sel),
                    "seconds_per_file": sum(r["seconds"] for r in sel) / max(files, 1), "files": files,
                    "errors": sum(bool(r.get("error")) for r in sel)})
    return out
