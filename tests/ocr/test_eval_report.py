"""`vlscope ocr eval` as a user runs it (a real subprocess) on a folder made here: a table image with its
ground truth laid out as PubTabNet ships it; the report's table section carries its numbers, and every
section says which folder it read or that the folder is not there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from core.ocr.evaluate import fields_table, reading_table
from tests.ocr.conftest import font

ROOT = Path(__file__).parents[2]
VLSCOPE = str(Path(sys.executable).parent / "vlscope")
ROWS = [["Item", "Qty", "Price"], ["Apples", "3", "4.50"], ["Pears", "12", "7.25"]]


def _table_png(path: Path) -> None:
    f = font("latin", 26)
    cw, ch = 180, 58
    img = Image.new("RGB", (cw * 3 + 60, ch * 3 + 60), "white")
    d = ImageDraw.Draw(img)
    for r in range(4):
        d.line([(30, 30 + r * ch), (30 + 3 * cw, 30 + r * ch)], fill="black", width=2)
    for c in range(4):
        d.line([(30 + c * cw, 30), (30 + c * cw, 30 + 3 * ch)], fill="black", width=2)
    for r, row in enumerate(ROWS):
        for c, t in enumerate(row):
            d.text((44 + c * cw, 44 + r * ch), t, fill="black", font=f)
    img.save(path)


def _pubtabnet_line(name: str) -> str:
    structure = ["<thead>", "<tr>"] + ["<td>", "</td>"] * 3 + ["</tr>", "</thead>", "<tbody>"]
    structure += (["<tr>"] + ["<td>", "</td>"] * 3 + ["</tr>"]) * 2 + ["</tbody>"]
    cells = [{"tokens": list(t)} for row in ROWS for t in row]
    return json.dumps({"filename": name, "split": "val", "imgid": 0,
                       "html": {"structure": {"tokens": structure}, "cells": cells}})


def test_eval_prints_the_table_sections_and_names_missing_folders(tmp_path: Path) -> None:
    folder = tmp_path / "eval"
    sets = folder / "tables" / "pubtabnet_examples"
    sets.mkdir(parents=True)
    _table_png(sets / "fruit.png")
    (sets / "PubTabNet_Examples.jsonl").write_text(_pubtabnet_line("fruit.png") + "\n")
    extra = tmp_path / "fetched"
    extra.mkdir()
    env = {**os.environ, "VLSCOPE_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([VLSCOPE, "ocr", "eval", str(folder), "--extra", str(extra), "--engines", "rapidocr",
                          "--conditions", "original", "-q"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    # the OCR section as before, saying its folders are not there
    assert f"no OCR files with ground truth: {folder / 'ocr'} is missing" in out
    assert f"not found: {folder / 'tables' / 'camelot'}" in out
    assert f"not found: {folder / 'docs' / 'invoice2data'}" in out
    # reading and fields: measured by their modules when this checkout has them, else said to be skipped
    reading = out.split("## Reading")[1].split("##")[0]
    assert ("skipped: core/ocr/eval_reading.py" in reading or
            f"no reading sets found: read {folder} and {extra}" in reading), reading
    fields = out.split("## Fields")[1].split("##")[0]
    assert ("skipped: core/ocr/eval_fields.py" in fields or
            f"no field sets found: read {folder}/docs and {extra}" in fields), fields
    # tables: the set read, the sets not there, and the figures
    tables = out.split("## Tables")[1].split("##")[0]
    assert f"pubtabnet_examples: {sets}" in tables
    assert f"icdar2013: not found in {folder} or {extra}" in tables
    line = next(ln for ln in tables.splitlines() if ln.strip().startswith("pubtabnet_examples") and "OCR" in ln)
    cols = line.split()
    assert cols[:6] == ["pubtabnet_examples", "OCR", "1", "1", "0", "1"]  # tables, found, split, shape right
    assert cols[6:9] == ["1.000", "1.000", "100.0%"]  # TEDS, TEDS-S, cells right
    speed = out.split("## Seconds per item")[1]
    row = next(ln for ln in speed.splitlines() if "table file, pubtabnet_examples" in ln)
    assert float(row.split()[-2]) > 0 and row.split()[-1] == "1"


def test_reading_and_field_tables_from_their_rows() -> None:
    # one row per item
    rows = [{"set": "a", "file": "x.png", "script": "Arabic", "cer_vlscope": 0.10, "cer_plain": 0.20},
            {"set": "a", "file": "y.png", "script": "Arabic", "cer_vlscope": 0.30, "cer_plain": 0.10},
            {"set": "b", "file": "z.png", "script": "Devanagari", "cer_vlscope": 0.05, "cer_plain": 0.05}]
    head, body = reading_table(rows)
    assert head == ["set script", "n", "CER plain", "CER vlscope"]
    assert body == [["a Arabic", "2", "15.0%", "20.0%"], ["b Devanagari", "1", "5.0%", "5.0%"]]
    # one row per set and script (core.ocr.eval_reading's summary): means weighted by the items
    summary = [{"set": "lines", "script": "Arabic", "items": 3, "cer_vlscope": 0.10, "cer_plain": 0.30,
                "worse_than_plain": 1, "s_vlscope": 0.5},
               {"set": "lines", "script": "Arabic", "items": 1, "cer_vlscope": 0.50, "cer_plain": 0.10,
                "worse_than_plain": 1, "s_vlscope": 0.9}]
    assert reading_table(summary) == (["set script", "n", "CER plain", "CER vlscope", "worse than plain"],
                                      [["lines Arabic", "4", "25.0%", "20.0%", "2"]])
    long = [{"script": "Arabic", "engine": e, "cer": v, "file": f} for e, v, f in
            (("plain", 0.2, "x"), ("vlscope", 0.1, "x"), ("plain", 0.4, "y"), ("vlscope", 0.3, "y"))]
    assert reading_table(long) == (["set script", "n", "CER plain", "CER vlscope"], [["Arabic", "2", "30.0%", "20.0%"]])
    fields = [{"set": "sroie", "mode": "OCR", "checks": {"vendor": True, "total": False}},
              {"set": "sroie", "mode": "OCR", "checks": {"vendor": True, "total": True}}]
    assert fields_table(fields) == (["field", "sroie OCR"], [["vendor", "2/2 100%"], ["total", "1/2 50%"],
                                                           ["all fields", "3/4 75%"]])
