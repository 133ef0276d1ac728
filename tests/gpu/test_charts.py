"""core.charts: each figure carries exactly the numbers it was given."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from core.charts import (
    GPU_PANELS,
    TABLE_COLUMNS,
    decode_ms,
    gpu_history_figure,
    host_history_figure,
    ledger_figure,
    ledger_table,
    request_labels,
)
from core.gpu import GpuReading, HostReading, Monitor, Snapshot
from core.vlm.base import RequestRecord

GIB = 1024**3
T0 = 1_700_000_000.0


def _gpu(index: int, util: float | None, used_gib: float, temp: float, power: float | None) -> GpuReading:
    return GpuReading(index, f"NVIDIA H200 #{index}", f"GPU-{index}", util, int(used_gib * GIB), 140 * GIB, temp,
                      power, 700.0, 1980, 2619)


def _host(cpu: float, used_gib: float) -> HostReading:
    return HostReading(cpu, [cpu, cpu], 2, int(used_gib * GIB), 24 * GIB, 100 * used_gib / 24, 100)


def _gpu_samples() -> list[Snapshot]:
    return [
        Snapshot(T0 + t, True, "", [_gpu(0, u0, m0, 40 + t, 100 + t), _gpu(1, u1, m1, 50 + t, p1)], _host(5, 2))
        for t, (u0, m0, u1, m1, p1) in enumerate([(10, 1, 90, 70, 600), (20, 2, None, 71, None), (30, 3, 95, 72, 650)])
    ]


def test_gpu_history_has_one_line_per_gpu_in_each_panel_with_the_readings() -> None:
    fig = gpu_history_figure(_gpu_samples())
    assert len(fig.data) == 2 * len(GPU_PANELS) == 8
    assert [a.text for a in fig.layout.annotations] == [title for title, _ in GPU_PANELS]
    by = {(tr.name, tr.yaxis): tr for tr in fig.data}
    gpu1 = "GPU 1: NVIDIA H200 #1"
    assert list(by[(gpu1, "y")].y) == [90, None, 95]  # a missing reading is a gap, not a zero
    assert list(by[("GPU 0: NVIDIA H200 #0", "y")].y) == [10, 20, 30]
    assert list(by[(gpu1, "y2")].y) == pytest.approx([70, 71, 72])  # GiB
    assert list(by[(gpu1, "y3")].y) == [50, 51, 52]
    assert list(by[(gpu1, "y4")].y) == [600, None, 650]
    assert list(by[(gpu1, "y")].x) == [datetime.fromtimestamp(T0 + t) for t in range(3)]
    # one legend entry per GPU, same colour in every panel
    assert sum(tr.showlegend for tr in fig.data) == 2
    assert len({tr.line.color for tr in fig.data if tr.name == gpu1}) == 1
    assert tuple(fig.layout.yaxis.range) == (0, 105)
    assert fig.layout.yaxis2.range[1] == pytest.approx(140 * 1.02)


def test_gpu_history_of_nothing_is_an_empty_chart() -> None:
    assert len(gpu_history_figure([]).data) == 0


def test_history_time_axis_spans_the_chosen_window() -> None:
    fig = gpu_history_figure(_gpu_samples(), window_s=300, now=T0 + 2)
    assert tuple(fig.layout.xaxis.range) == (datetime.fromtimestamp(T0 - 298), datetime.fromtimestamp(T0 + 2))
    assert fig.layout.xaxis.tickformat == "%H:%M:%S"
    assert gpu_history_figure(_gpu_samples()).layout.xaxis.range is None  # without a window: fit the data


def test_host_history_shows_real_cpu_and_ram_readings() -> None:
    monitor = Monitor()
    samples = [monitor.read() for _ in range(3)]
    fig = host_history_figure(samples)
    cpu, ram = fig.data
    assert list(cpu.y) == [s.host.cpu_percent for s in samples]
    assert list(ram.y) == pytest.approx([s.host.memory_used_bytes / GIB for s in samples])
    assert cpu.name == f"CPU ({samples[0].host.cpu_count} cores)"
    assert fig.layout.yaxis2.range[1] == pytest.approx(samples[0].host.memory_total_bytes / GIB * 1.02)
    assert all(0 <= v <= 100 for v in cpu.y)


def _records() -> list[RequestRecord]:
    return [
        RequestRecord(T0, "video_qa", "m", "stop", prompt_tokens=4000, completion_tokens=50, visual_tokens=3560,
                      preprocess_ms=120.0, queue_ms=5.0, prefill_ms=640.0, ttft_ms=765.0, total_ms=1765.0,
                      decode_tokens_per_s=49.0, peak_gpu_memory_bytes=10_300 * 1024**2),
        RequestRecord(T0 + 60, "chat", "m", "error", preprocess_ms=10.0, total_ms=12.0, error="Out of GPU memory"),
    ]


def test_ledger_chart_splits_each_request_into_its_phases() -> None:
    records = _records()
    fig = ledger_figure(records)
    bars = {tr.name: tr for tr in fig.data}
    assert list(bars["Preprocessing"].y) == [120.0, 10.0]
    assert list(bars["Waiting for the model"].y) == [5.0, 0.0]
    assert list(bars["Prefill"].y) == [640.0, 0.0]
    assert list(bars["Decoding"].y) == [1000.0, 2.0]
    assert list(bars["Tokens/s"].y) == [49.0, None]
    assert list(bars["Visual tokens"].y) == [3560, 0]
    assert fig.layout.barmode == "stack"
    labels = request_labels(records)
    assert list(bars["Prefill"].x) == labels and labels[0].startswith("#1 ") and labels[0].endswith(" video_qa")
    assert labels[1].startswith("#2 ") and labels[1].endswith(" chat (failed)")
    assert "peak GPU memory 10300 MiB" in bars["Prefill"].customdata[0]
    assert "Out of GPU memory" in bars["Prefill"].customdata[1]
    assert decode_ms(records[0]) == pytest.approx(records[0].total_ms - records[0].ttft_ms)


def test_ledger_table_lists_requests_newest_first_with_readable_units() -> None:
    df = ledger_table(_records())
    assert list(df.columns) == TABLE_COLUMNS
    assert list(df["Kind"]) == ["chat", "video_qa"]
    first = df.iloc[1]
    assert first["Visual tokens"] == 3560 and first["Prefill (ms)"] == 640.0
    assert first["Time to first token (ms)"] == 765.0 and first["Tokens/s"] == 49.0
    assert first["Peak GPU memory (MiB)"] == 10300
    assert df.iloc[0]["Status"] == "Failed" and df.iloc[0]["Error"] == "Out of GPU memory"
    assert first["Status"] == "Finished"
    assert pd.isna(df.iloc[0]["Peak GPU memory (MiB)"])  # no GPU memory figure: empty, not 0
    assert ledger_table([]).empty


def test_ledger_chart_of_a_real_request_to_the_tiny_model(tiny_engine) -> None:
    from core.vlm import GenerationParams, user

    before = len(tiny_engine.ledger.records())
    tiny_engine.generate([user("Describe the image.")], GenerationParams(max_new_tokens=8, temperature=0), kind="chat")
    record = tiny_engine.ledger.records()[-1]
    assert len(tiny_engine.ledger.records()) == before + 1
    fig = ledger_figure([record])
    bars = {tr.name: tr for tr in fig.data}
    assert bars["Prefill"].y[0] == pytest.approx(record.prefill_ms) and record.prefill_ms > 0
    assert sum(bars[name].y[0] for name in ("Preprocessing", "Waiting for the model", "Prefill", "Decoding")) == (
        pytest.approx(record.total_ms))
    row = ledger_table([record]).iloc[0]
    assert row["Kind"] == "chat" and row["Output tokens"] == record.completion_tokens > 0


def test_statuses_read_as_plain_words_never_the_engine_finish_reason() -> None:
    from core.charts.ledger import status_words

    records = _records()
    records[0].status = "length"
    df = ledger_table(records, newest_first=False)
    assert df.iloc[0]["Status"] == "Cut at the answer length limit"
    assert "status: cut at the answer length limit" in ledger_figure(records).data[0].customdata[0]
    assert [status_words(s) for s in ("stop", "cancelled", "error")] == ["Finished", "Cancelled", "Failed"]
