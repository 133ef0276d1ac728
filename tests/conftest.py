"""Shared fixtures: a tiny random-weight Qwen3-VL built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Two passes. The CPU pass (the default, and all that CI runs) sees no GPU even on a machine that has one: its tests
# check CPU values (fp32 answers, the CPU's memory plan, tensors on the CPU), and on a GPU box they failed by the
# dozen. The CUDA pass (VLSCOPE_TEST_CUDA=1, run by `bash vlscope.sh test` where a GPU is usable) sees the GPU and
# runs only the tests marked `cuda`. Set before torch starts CUDA; child processes (dashboard, CLI) inherit it.
CUDA_PASS = os.environ.get("VLSCOPE_TEST_CUDA") == "1"
if not CUDA_PASS:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the CUDA pass only the `cuda` tests run; in the CPU pass they are skipped with the command that runs them."""
    if CUDA_PASS:
        keep = [item for item in items if item.get_closest_marker("cuda")]
        config.hook.pytest_deselected(items=[item for item in items if not item.get_closest_marker("cuda")])
        items[:] = keep
        return
    skip = pytest.mark.skip(reason="a CUDA test: runs in the CUDA pass (VLSCOPE_TEST_CUDA=1, on a machine with a GPU)")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


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


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The environment of a dashboard page test: its own cache folder, no model, no sign-in, run from the repo."""
    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VLSCOPE_MODEL", str(tmp_path / "no-model-here"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("VLSCOPE_MEDIA_ROOT", "VLSCOPE_AUTH_FILE", "VLSCOPE_AUTH_OIDC", "VLSCOPE_ENGINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(Path(__file__).parents[1])
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    from core.jobs import registry

    for job in registry().running():
        job.cancel()
        job.wait(10)
    st.cache_resource.clear()
    st.cache_data.clear()
