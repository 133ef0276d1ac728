"""History charts of the GPU monitor: GPUs (one trace per GPU per panel) and the CPU/RAM fallback."""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from core.gpu.readings import Snapshot

GIB = 1024**3
PALETTE = qualitative.Plotly

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


def gpu_history_figure(samples: Sequence[Snapshot], height: int = 720) -> go.Figure:
    """Utilisation, memory, temperature and power over time: four stacked panels sharing the time axis,
    one line per GPU in each (same colour and legend entry per GPU). Missing values leave gaps.

    The memory panel's axis runs up to the largest card's memory, the utilisation axis to 100 %.
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
    fig.update_yaxes(range=[0, 100], row=1, col=1)
    if max_total:
        fig.update_yaxes(range=[0, max_total * 1.02], row=2, col=1)
    fig.update_xaxes(title_text="time", row=len(GPU_PANELS), col=1)
    fig.update_layout(height=height, margin={"l": 40, "r": 20, "t": 40, "b": 40}, hovermode="x unified",
                      legend={"orientation": "h", "y": -0.08})
    return fig


def host_history_figure(samples: Sequence[Snapshot], height: int = 420) -> go.Figure:
    """CPU load (all cores, %) and RAM used (GiB) over time: two panels sharing the time axis.

    The RAM axis runs up to the machine's total memory, so the chart shows how full it is.
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
    fig.update_yaxes(range=[0, 100], row=1, col=1)
    if total:
        fig.update_yaxes(range=[0, total * 1.02], row=2, col=1)
    fig.update_xaxes(title_text="time", row=2, col=1)
    fig.update_layout(height=height, margin={"l": 40, "r": 20, "t": 40, "b": 40}, hovermode="x unified",
                      showlegend=False)
    return fig
