"""Shared fixtures: a tiny random-weight Qwen3-VL built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3-VL saved with save_pretrained, loaded by tests through the users' path."""
    from core.vlm.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen3-vl"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A loaded LocalEngine over the tiny model (shared by the session's tests)."""
    from core.settings import Settings
    from core.vlm.local import LocalEngine

    engine = LocalEngine(Settings(model=str(tiny_model_dir), cache_dir=tmp_path_factory.mktemp("cache")))
    engine.load()
    yield engine
    engine.close()
