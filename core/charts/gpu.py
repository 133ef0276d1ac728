"""History charts of the GPU monitor: GPUs (one trace per GPU per panel) and the CPU/RAM fallback."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from core.gpu.readings import Snapshot

GIB = 1024**3
PALETTE = qualitative.Plotly
PERCENT_TOP = 105  # a little room above 100 % so a line at full load stays visible

# (panel title, value of one GPU reading)
GPU_PANELS: list[tuple[str, str]] = [
    ("Utilisation (%)", "utilization_percent"),
    ("Memory used (GiB)", "memory_used_gib"),
    ("Temperature (°C)", "temperature_c"),
    ("Power draw (W)", "power_draw_w"),
]


def _time(t: float) -> datetime:
    return datetime.fromtimestamp(t)


def _gib(n: int | None) -> float | None:
    return None if n is None else n / GIB


def _time_axis(fig: go.Figure, rows: int, window_s: float | None, now: float | None) -> None:
    """Clock-time ticks; with `window_s`, the axis spans the whole window ending at `now` (data fills in from the right)."""
    fig.update_xaxes(tickformat="%H:%M:%S")
    if window_s is not None:
        end = now if now is not None else time.time()
        fig.update_xaxes(range=[_time(end - window_s), _time(end)])
    fig.update_xaxes(title_text="time", row=rows, col=1)


def gpu_history_figure(samples: Sequence[Snapshot], height: int = 720, window_s: float | None = None,
                       now: float | None = None) -> go.Figure:
    """Utilisation, memory, temperature and power over time: four stacked panels sharing the time axis,
    one line per GPU in each (same colour and legend entry per GPU). Missing values leave gaps.

    The memory panel's axis runs up to the largest card's memory, the utilisation axis to 100 %.
    With `window_s`, the time axis shows the whole window (the last `window_s` seconds before `now`).
    """
    fig = make_subplots(rows=len(GPU_PANELS), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[title for title, _ in GPU_PANELS])
    gpus: dict[int, str] = {}
    for s in samples:
        for g in s.gpus:
            gpus.setdefault(g.index, g.name)
    max_total = 0.0
    for index, name in sorted(gpus.items()):
        rows = [(s.taken_at, g) for s in samples for g in s.gpus if g.index == index]
        x = [_time(t) for t, _ in rows]
        values = {
            "utilization_percent": [g.utilization_percent for _, g in rows],
            "memory_used_gib": [_gib(g.memory_used_bytes) for _, g in rows],
            "temperature_c": [g.temperature_c for _, g in rows],
            "power_draw_w": [g.power_draw_w for _, g in rows],
        }
        max_total = max([max_total, *[_gib(g.memory_total_bytes) or 0.0 for _, g in rows]])
        color = PALETTE[index % len(PALETTE)]
        for row, (title, key) in enumerate(GPU_PANELS, start=1):
            fig.add_trace(
                go.Scatter(x=x, y=values[key], mode="lines", name=f"GPU {index}: {name}", legendgroup=f"gpu{index}",
                           showlegend=row == 1, line={"color": color}, connectgaps=False,
                           hovertemplate=f"GPU {index} · {title}: %{{y:.1f}}<extra></extra>"),
                row=row, col=1,
            )
    fig.update_yaxes(range=[0, PERCENT_TOP], row=1, col=1)
    if max_total:
        fig.update_yaxes(range=[0, max_total * 1.02], row=2, col=1)
    _time_axis(fig, len(GPU_PANELS), window_s, now)
    fig.update_layout(height=height, margin={"l": 40, "r": 20, "t": 40, "b": 40}, hovermode="x unified",
                      legend={"orientation": "h", "y": -0.08})
    return fig


def host_history_figure(samples: Sequence[Snapshot], height: int = 420, window_s: float | None = None,
                        now: float | None = None) -> go.Figure:
    """CPU load (all cores, %) and RAM used (GiB) over time: two panels sharing the time axis.

    The RAM axis runs up to the machine's total memory, so the chart shows how full it is.
    `window_s` and `now` as in `gpu_history_figure`.
    """
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=["CPU load, all cores (%)", "RAM used (GiB)"])
    x = [_time(s.taken_at) for s in samples]
    cores = samples[-1].host.cpu_count if samples else 0
    fig.add_trace(go.Scatter(x=x, y=[s.host.cpu_percent for s in samples], mode="lines",
                             name=f"CPU ({cores} cores)", line={"color": PALETTE[0]},
                             hovertemplate="CPU: %{y:.1f} %<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=[_gib(s.host.memory_used_bytes) for s in samples], mode="lines",
                             name="RAM used", line={"color": PALETTE[1]},
                             hovertemplate="RAM used: %{y:.2f} GiB<extra></extra>"), row=2, col=1)
    total = max((_gib(s.host.memory_total_bytes) or 0.0 for s in samples), default=0.0)
    fig.update_yaxes(range=[0, PERCENT_TOP], row=1, col=1)
    if total:
        fig.update_yaxes(range=[0, total * 1.02], row=2, col=1)
    _time_axis(fig, 2, window_s, now)
    fig.update_layout(height=height, margin={"l": 40, "r": 20, "t": 40, "b": 40}, hovermode="x unified",
                      showlegend=False)
    return fig
