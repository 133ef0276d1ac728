"""The layering rule: core/ never imports Streamlit, and the lint rule that enforces it really fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe, "ruff is part of the test extra"
    return [exe]


def test_ruff_bans_streamlit_in_core(tmp_path: Path) -> None:
    planted = ROOT / "core" / "_planted_streamlit_import.py"
    planted.write_text("import streamlit as st\n", encoding="utf-8")
    try:
        out = subprocess.run(
            _ruff() + ["check", "--no-cache", str(planted)], cwd=ROOT, capture_output=True, text=True
        )
    finally:
        planted.unlink()
    assert out.returncode != 0
    assert "TID251" in out.stdout and "core/ must stay free of Streamlit" in out.stdout


def test_core_imports_without_streamlit() -> None:
    code = (
        "import sys, importlib, pkgutil, core\n"
        "sys.modules['streamlit'] = None  # any import of streamlit now fails\n"
        "for m in pkgutil.walk_packages(core.__path__, 'core.'):\n"
        "    importlib.import_module(m.name) if not m.name.endswith('__main__') else None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_design_layout_exists() -> None:
    for path in ("Home.py", "pages", "core", "tests", "pyproject.toml", ".streamlit/config.toml", "README.md",
                 ".ci/run", "benchmarks"):
        assert (ROOT / path).exists(), path
    ignored = subprocess.run(["git", "check-ignore", "cache/x"], cwd=ROOT, capture_output=True, text=True)
    assert ignored.returncode == 0, "cache/ must be ignored by git"
