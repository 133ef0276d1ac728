"""The Home page, driven headlessly with AppTest: what is available, the cache, navigation."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).parents[2]


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(ROOT)
    import streamlit as st

    st.cache_resource.clear()
    yield tmp_path
    st.cache_resource.clear()


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [s.value for s in at.success] + [w.value for w in at.warning]
    parts += [i.value for i in at.info] + [e.value for e in at.error] + [c.value for c in at.caption]
    return "\n".join(str(p) for p in parts)


def test_home_without_model_explains_the_fix(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLSCOPE_MODEL", "Qwen/Qwen3-VL-4B-Instruct")
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=120).run()
    assert not at.exception
    assert at.title[0].value == "VLScope"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Device"] == "CPU" and metrics["Model"] == "not found"
    text = _texts(at)
    assert "hf download Qwen/Qwen3-VL-4B-Instruct" in text
    assert "OCR still work" in text or "still work" in text
    assert metrics["Entries"] == "0"


def test_home_with_tiny_model_loads_it_on_request(app_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tiny_model_dir: Path) -> None:
    monkeypatch.setenv("VLSCOPE_MODEL", str(tiny_model_dir))
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=180).run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Model"] == "found"
    at.button(key="load_model").click().run()
    assert not at.exception
    assert any("Loaded on cpu (fp32, sdpa" in str(m.value) for m in at.markdown)


@pytest.mark.parametrize("arch, words, decoding", [
    ("qwen3_vl", "Qwen3-VL: 2 layers", "Decoding: plain generate"),
    ("qwen3_5", "Qwen3.5: ", "Qwen3.5's Gated DeltaNet layers keep a recurrent state"),
])
def test_home_says_the_architecture_and_which_decoding_path_runs(app_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  arch: str, words: str, decoding: str) -> None:
    """Issue 17: the Home page says what was loaded and whether the fast decoder covers it (Qwen3.5: why not)."""
    from core.vlm.tiny import build_tiny_model

    folder = build_tiny_model(app_env / f"tiny-{arch}", arch=arch)
    monkeypatch.setenv("VLSCOPE_MODEL", str(folder))
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=180).run()
    at.button(key="load_model").click().run()
    assert not at.exception
    texts = [str(t.value) for t in at.text]
    architecture = next(t for t in texts if t.startswith("Architecture: "))
    assert words in architecture, architecture
    assert any(t.startswith("Decoding: ") and decoding in t for t in texts), texts


def test_home_shows_cache_statistics(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.cache import ResultCache, make_key

    with ResultCache(app_env / "cache") as cache:
        cache.put_json(make_key("a" * 64, "probe"), {"x": 1})
        cache.put_json(make_key("b" * 64, "probe"), {"x": 2})
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=120).run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Entries"] == "2" and metrics["Files analysed"] == "2"
