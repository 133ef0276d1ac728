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


# ---------------------------------------------------------------- layers and cycles, read from the imports
# Top to bottom; data flows down, nothing flows up (shared/DESIGN.md). A package may import packages of lower
# layers, and another package of its own layer as long as no cycle forms. Imports under `if TYPE_CHECKING:`
# are annotations, not arrows.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("pages and their glue", ("Home", "pages", "ui")),
    ("front ends: argument and HTTP handling", ("core.cli", "core.api")),
    ("the application layer", ("core.app",)),
    ("library and charts", ("core.library", "core.charts")),
    ("analysis", ("core.analysis",)),
    ("uploaded files", ("core.files",)),
    ("media and OCR", ("core.media", "core.ocr", "core.speech")),
    ("engines and what is installed", ("core.vlm", "core.gpu", "core.status")),
    ("the result store and background jobs", ("core.cache", "core.jobs")),
    ("the bottom", ("core", "core.events", "core.settings", "core.errors", "core.auth", "core.limits")),
]


def _source_files() -> list[Path]:
    files = sorted((ROOT / "core").rglob("*.py")) + sorted((ROOT / "ui").glob("*.py"))
    return files + sorted((ROOT / "pages").glob("*.py")) + [ROOT / "Home.py"]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "core" and len(parts) > 1 else parts[0]


def _imports(path: Path) -> list[str]:
    """Every core/ui module named by an import in `path` (nested and TYPE_CHECKING imports too)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return [n for n in names if n.split(".")[0] in ("core", "ui", "pages")]


def _graph() -> tuple[dict[str, set[str]], dict[str, Path]]:
    files = {_module(p): p for p in _source_files()}

    def resolve(name: str) -> str:
        while name and name not in files:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name

    edges: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for name in _imports(path):
            target = resolve(name)
            if target and target != module:
                edges[module].add(target)
    return edges, files


def _rank(module: str) -> int:
    package = _package(module)
    for rank, (_, packages) in enumerate(LAYERS):
        if package in packages:
            return rank
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS in tests/test_layout.py")


def test_every_package_has_a_layer() -> None:
    edges, _ = _graph()
    for module in edges:
        _rank(module)


def test_no_import_runs_back_up_a_layer() -> None:
    edges, files = _graph()
    upward = [f"{files[a].relative_to(ROOT)} imports {b} ({LAYERS[_rank(b)][0]} sits above {LAYERS[_rank(a)][0]})"
              for a, targets in edges.items() for b in sorted(targets) if _rank(b) < _rank(a)]
    assert upward == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_files_or_packages() -> None:
    edges, _ = _graph()
    assert _cycles(edges) == []
    packages: dict[str, set[str]] = {}
    for a, targets in edges.items():
        packages.setdefault(_package(a), set()).update(_package(b) for b in targets if _package(b) != _package(a))
    assert _cycles(packages) == []


def test_the_layer_check_catches_an_arrow_up_and_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _rank("core.media.probe") > _rank("core.app.video") > _rank("ui.state")


def test_front_ends_call_the_application_layer() -> None:
    """Pages, CLI and API reach the video workflows through core/app, not by wiring the pipeline themselves."""
    edges, files = _graph()
    wiring = {"core.analysis.video_pipeline.analyze_video", "core.analysis.qa.VideoQA",
              "core.analysis.sources.MediaFrameSource", "core.vlm.create_engine", "core.cache.open_cache"}
    offenders = []
    for module, path in files.items():
        if _package(module) in ("pages", "ui", "Home", "core.cli", "core.api"):
            named = set(_imports(path))
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in sorted(named & wiring)]
    assert offenders == []
