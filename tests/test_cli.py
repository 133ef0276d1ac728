"""`vlscope info` and `vlscope cache ...` as a user runs them (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from core.cache import ResultCache, make_key

ROOT = Path(__file__).parents[1]
VLSCOPE = str(Path(sys.executable).parent / "vlscope")  # the console script users run


def _run(args: list[str], cache_dir: Path, model: str = "Qwen/Qwen3-VL-4B-Instruct") -> subprocess.CompletedProcess:
    env = {**os.environ, "VLSCOPE_CACHE_DIR": str(cache_dir), "VLSCOPE_MODEL": model, "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(cache_dir.parent / "hf")}
    return subprocess.run([VLSCOPE, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_info_says_model_missing_and_how_to_fix(tmp_path: Path) -> None:
    out = _run(["info"], tmp_path / "c")
    assert out.returncode == 0, out.stderr
    assert "Qwen/Qwen3-VL-4B-Instruct: NOT available" in out.stdout
    assert "hf download Qwen/Qwen3-VL-4B-Instruct" in out.stdout
    assert "Device: cpu" in out.stdout
    assert "OCR rapidocr: available" in out.stdout


def test_info_json_with_local_model(tmp_path: Path, tiny_model_dir: Path) -> None:
    out = _run(["info", "--json"], tmp_path / "c", model=str(tiny_model_dir))
    data = json.loads(out.stdout)
    assert data["environment"]["model"]["available"] is True
    assert data["environment"]["model"]["location"] == str(tiny_model_dir)
    assert data["cache"]["entries"] == 0


def test_cache_stats_list_delete_clear(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    with ResultCache(folder) as cache:
        cache.put_json(make_key("f" * 64, "probe"), {"d": 1})
        cache.put_json(make_key("f" * 64, "scenes"), {"d": 2})
        cache.put_json(make_key("0" * 64, "probe"), {"d": 3})
    stats = json.loads(_run(["cache", "stats", "--json"], folder).stdout)
    assert (stats["entries"], stats["inputs"]) == (3, 2)
    listing = _run(["cache", "list", "--input", "f" * 64], folder).stdout
    assert "2 entries" in listing and "scenes" in listing and "probe" in listing
    assert "deleted 2 entries" in _run(["cache", "delete", "--input", "f" * 64], folder).stdout
    assert "deleted 1 entries" in _run(["cache", "clear"], folder).stdout
    assert json.loads(_run(["cache", "stats", "--json"], folder).stdout)["entries"] == 0


def test_bad_setting_is_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "VLSCOPE_DTYPE": "int3", "VLSCOPE_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([VLSCOPE, "info"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.startswith("error: Invalid settings") and "VLSCOPE_DTYPE" in out.stderr
    assert "Traceback" not in out.stderr
