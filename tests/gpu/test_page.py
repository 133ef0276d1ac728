"""pages/gpu_monitor.py driven headlessly with AppTest on this machine (no NVIDIA GPU)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import psutil
import pytest
from streamlit.testing.v1 import AppTest

from core.gpu import nvml_available

ROOT = Path(__file__).parents[2]
PAGE = str(ROOT / "pages" / "gpu_monitor.py")
no_driver_only = pytest.mark.skipif(nvml_available(), reason="an NVIDIA driver is present: no CPU/RAM fallback")


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VLSCOPE_MODEL", "Qwen/Qwen3-VL-4B-Instruct")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(ROOT)
    import streamlit as st

    st.cache_resource.clear()
    yield tmp_path
    st.cache_resource.clear()  # also stops the page's background sampler


def _run() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


@no_driver_only
def test_without_gpu_the_page_says_so_and_shows_cpu_and_ram(app_env: Path) -> None:
    at = _run()
    assert at.title[0].value == "GPU monitor"
    warning = at.warning[0].value
    assert "No NVIDIA GPU available" in warning and "CPU and RAM instead" in warning
    assert any(c.value.startswith("Why: No NVIDIA driver") and "libnvidia-ml.so.1" in c.value for c in at.caption)
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) == {"CPU load", "CPU cores", "RAM used", "This app's memory"}
    assert metrics["CPU cores"] == str(psutil.cpu_count())
    cpu = float(metrics["CPU load"].removesuffix(" %"))
    assert 0 <= cpu <= 100
    used, total = map(float, re.fullmatch(r"([\d.]+) / ([\d.]+) GiB", metrics["RAM used"]).groups())
    assert total == pytest.approx(psutil.virtual_memory().total / 1024**3, abs=0.05) and 0 < used < total
    assert at.get("plotly_chart")[0].key == "host_history"
    assert any("No model requests yet" in i.value for i in at.info)


def test_ledger_table_shows_a_request_added_to_the_shared_engine(app_env: Path) -> None:
    from core.vlm.base import RequestRecord
    from ui.state import get_engine

    at = _run()
    assert not at.dataframe
    get_engine().ledger.add(RequestRecord(
        started_at=time.time(), kind="video_qa", model="Qwen/Qwen3-VL-4B-Instruct", status="stop",
        prompt_tokens=3700, completion_tokens=64, visual_tokens=3560, preprocess_ms=150.0, queue_ms=2.0,
        prefill_ms=640.0, ttft_ms=792.0, total_ms=2100.0, decode_tokens_per_s=48.9,
        peak_gpu_memory_bytes=10_300 * 1024**2,
    ))
    at.run()
    assert not at.exception
    assert not any("No model requests yet" in i.value for i in at.info)
    table = at.dataframe[0].value
    row = table.iloc[0]
    assert (row["Kind"], row["Visual tokens"], row["Prefill (ms)"]) == ("video_qa", 3560, 640.0)
    assert (row["Time to first token (ms)"], row["Tokens/s"], row["Peak GPU memory (MiB)"]) == (792.0, 48.9, 10300)
    assert "ledger_chart" in [c.key for c in at.get("plotly_chart")]
    assert any("1 request to the model" in c.value for c in at.caption)


def test_pause_stops_live_updates(app_env: Path) -> None:
    at = _run()
    assert any("refreshing every 1 s" in c.value for c in at.caption)
    at.toggle(key="gpu_paused").set_value(True).run()
    assert any(" paused " in c.value for c in at.caption)
    assert at.select_slider(key="gpu_interval").disabled
    at.select_slider(key="gpu_minutes").set_value(1).run()
    assert any(s.value == "The last minute" for s in at.subheader)
