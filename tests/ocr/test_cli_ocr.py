"""`vlscope ocr FILE` as a user runs it (a real subprocess): the runtime's document service reads the file
through the result cache, and a model that is not there is one clear line naming the fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.pages.media import text_image

ROOT = Path(__file__).parents[2]
VLSCOPE = str(Path(sys.executable).parent / "vlscope")


def _run(args: list[str], tmp: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "VLSCOPE_CACHE_DIR": str(tmp / "cache"), "VLSCOPE_MODEL": str(tmp / "no-model-here"),
            "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf"), **env}
    return subprocess.run([VLSCOPE, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=300)


def test_ocr_reads_the_file_and_a_second_run_comes_from_the_cache(tmp_path: Path) -> None:
    scan = tmp_path / "scan.png"
    scan.write_bytes(text_image(["Quarterly report 2024", "Revenue grew by 42 percent"]))
    first = _run(["ocr", str(scan)], tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["Quarterly report 2024", "Revenue grew by 42 percent"]
    assert "page 1 of 1: 2 lines (ocr, rapidocr)" in first.stderr
    again = _run(["ocr", str(scan)], tmp_path)
    assert again.stdout == first.stdout and "all pages from the cache" in again.stderr


def test_ocr_with_a_missing_model_says_how_to_fix_it(tmp_path: Path) -> None:
    scan = tmp_path / "scan.png"
    scan.write_bytes(text_image(["Invoice 4711"]))
    out = _run(["ocr", str(scan), "--engine", "vlm", "-q"], tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert "The Qwen3-VL engine failed" in out.stderr and "no-model-here" in out.stderr
    assert "Use --engine rapidocr or tesseract." in out.stderr and "Traceback" not in out.stderr
