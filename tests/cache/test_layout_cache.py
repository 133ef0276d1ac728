"""The layout of core/cache, read from the source with `ast` (every import, also those inside functions):
the two backends build on `core.cache.base` and never import each other, nothing in core/cache imports
the layers above it, and `core.cache` still offers every public name it offered before the split."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CACHE = Path(__file__).parents[2] / "core" / "cache"
UPWARD = ("core.analysis", "core.app", "core.cli", "core.api", "ui", "pages", "streamlit")


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; `from pkg import mod` also counts as `pkg.mod`)."""
    package = "core.cache"  # every file here is a module of this package (or its __init__)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against core.cache
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(parts + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _imports_module(imports: set[str], module: str) -> bool:
    return any(name == module or name.startswith(module + ".") for name in imports)


def test_layout_cache_files_are_the_base_and_two_backends() -> None:
    assert {p.name for p in CACHE.glob("*.py")} >= {"__init__.py", "base.py", "store.py", "redis_store.py"}


def test_layout_cache_backends_do_not_import_each_other() -> None:
    store, redis_store, base = (_imports(CACHE / n) for n in ("store.py", "redis_store.py", "base.py"))
    assert not _imports_module(store, "core.cache.redis_store"), "store.py imports redis_store.py"
    assert not _imports_module(redis_store, "core.cache.store"), "redis_store.py imports store.py"
    assert _imports_module(store, "core.cache.base") and _imports_module(redis_store, "core.cache.base")
    # the shared base depends on neither backend, nor on the package that re-exports them
    assert not {"core.cache", "core.cache.store", "core.cache.redis_store"} & base
    assert not any(_imports_module({m}, "core.cache.store") or _imports_module({m}, "core.cache.redis_store")
                   for m in base)


@pytest.mark.parametrize("path", sorted(CACHE.glob("*.py")), ids=lambda p: p.name)
def test_layout_cache_imports_nothing_from_the_layers_above(path: Path) -> None:
    upward = sorted(name for name in _imports(path) if any(_imports_module({name}, up) for up in UPWARD))
    assert upward == [], f"{path.name} imports {upward}"


def test_layout_cache_public_names_are_unchanged() -> None:
    import core.cache
    import core.cache.redis_store

    assert sorted(core.cache.__all__) == sorted([
        "SCHEMA_VERSION", "CacheBackend", "CacheDamaged", "CacheEntry", "CacheKey", "CacheStats", "CorruptEntry",
        "ResultCache", "canonical_json", "hash_bytes", "hash_file", "make_key", "open_cache",
    ])
    for name in core.cache.__all__:
        assert hasattr(core.cache, name), name
    assert issubclass(core.cache.ResultCache, core.cache.CacheBackend)
    assert issubclass(core.cache.redis_store.RedisResultCache, core.cache.CacheBackend)
    assert issubclass(core.cache.redis_store.CacheUnavailable, Exception)
    # one set of shared classes: both backends list entries with the very same CacheEntry type
    assert core.cache.redis_store.CacheEntry is core.cache.CacheEntry
    assert core.cache.redis_store.CacheKey is core.cache.store.CacheKey
