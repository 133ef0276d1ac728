"""The engine's per-request ledger (core.vlm.base.RequestRecord) as a table and as a chart."""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from core.vlm.base import RequestRecord

MIB = 1024**2

# Where the time of one request went, in the order it happens.
PHASES: list[tuple[str, str]] = [
    ("Preprocessing", "preprocess_ms"),
    ("Waiting for the model", "queue_ms"),
    ("Prefill", "prefill_ms"),
    ("Decoding", "decode_ms"),
]

TABLE_COLUMNS = [
    "Time", "Kind", "Status", "Visual tokens", "Prefill (ms)", "Time to first token (ms)", "Tokens/s",
    "Peak GPU memory (MiB)", "Total (ms)", "Prompt tokens", "Output tokens", "Error",
]


STATUS_WORDS = {
    "stop": "Finished",
    "length": "Cut at the answer length limit",
    "cancelled": "Cancelled",
    "error": "Failed",
    "running": "Running",
}
"""What a request's status (RequestRecord.status, the engine's finish reason) reads as on the GPU page."""


def status_words(status: str) -> str:
    """The status of a request in plain words ("length" -> "Cut at the answer length limit")."""
    return STATUS_WORDS.get(status, status.replace("_", " ").capitalize() if status else "")


def decode_ms(r: RequestRecord) -> float:
    """Time spent generating after the first token (what is left of the total after the other phases)."""
    return max(0.0, r.total_ms - r.preprocess_ms - r.queue_ms - r.prefill_ms)


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S")


def request_labels(records: Sequence[RequestRecord]) -> list[str]:
    """One x-axis label per request, in order: "#n HH:MM:SS kind", plus "(error)" or "(cancelled)" when it
    did not finish normally (unique even for equal times)."""
    return [
        f"#{i} {_clock(r.started_at)} {r.kind}" + (f" ({status_words(r.status).lower()})" if r.status in ("error", "cancelled") else "")
        for i, r in enumerate(records, start=1)
    ]


def ledger_table(records: Sequence[RequestRecord], newest_first: bool = True) -> pd.DataFrame:
    """The ledger as a table with the columns a user reads (TABLE_COLUMNS); numbers stay numbers.

    Peak GPU memory is empty (None) when the request ran without a GPU.
    """
    rows = [
        {
            "Time": datetime.fromtimestamp(r.started_at),
            "Kind": r.kind,
            "Status": status_words(r.status),
            "Visual tokens": r.visual_tokens,
            "Prompt tokens": r.prompt_tokens,
            "Output tokens": r.completion_tokens,
            "Prefill (ms)": round(r.prefill_ms, 1),
            "Time to first token (ms)": round(r.ttft_ms, 1),
            "Total (ms)": round(r.total_ms, 1),
            "Tokens/s": None if r.decode_tokens_per_s is None else round(r.decode_tokens_per_s, 1),
            "Peak GPU memory (MiB)": None if r.peak_gpu_memory_bytes is None else round(r.peak_gpu_memory_bytes / MIB),
            "Error": r.error or "",
        }
        for r in records
    ]
    df = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return df.iloc[::-1].reset_index(drop=True) if newest_first else df


def ledger_figure(records: Sequence[RequestRecord], height: int = 560) -> go.Figure:
    """Three panels, one column per request (oldest left):
    where its time went (stacked bars: preprocessing, waiting, prefill, decoding; ms),
    decode speed (tokens/s), and visual tokens. Hover shows status, peak GPU memory and any error.
    """
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=["Time per request (ms)", "Decode speed (tokens/s)", "Visual tokens"])
    x = request_labels(records)
    hover = [
        f"status: {status_words(r.status).lower()}"
        + (f" · peak GPU memory {r.peak_gpu_memory_bytes / MIB:.0f} MiB" if r.peak_gpu_memory_bytes else "")
        + (f" · error: {r.error[:120]}" if r.error else "")
        for r in records
    ]
    for i, (name, key) in enumerate(PHASES):
        y = [decode_ms(r) if key == "decode_ms" else getattr(r, key) for r in records]
        fig.add_trace(go.Bar(x=x, y=y, name=name, marker_color=qualitative.Plotly[i], customdata=hover,
                             hovertemplate=f"{name}: %{{y:.0f}} ms<br>%{{customdata}}<extra></extra>"),
                      row=1, col=1)
    fig.add_trace(go.Bar(x=x, y=[r.decode_tokens_per_s for r in records], name="Tokens/s",
                         marker_color=qualitative.Plotly[4], showlegend=False,
                         hovertemplate="%{y:.1f} tokens/s<extra></extra>"), row=2, col=1)
    fig.add_trace(go.Bar(x=x, y=[r.visual_tokens for r in records], name="Visual tokens",
                         marker_color=qualitative.Plotly[5], showlegend=False,
                         hovertemplate="%{y} visual tokens<extra></extra>"), row=3, col=1)
    # the phases' legend sits to the right of the first panel, top to bottom in the order they happen
    fig.update_layout(barmode="stack", height=height, margin={"l": 40, "r": 20, "t": 40, "b": 40},
                      legend={"y": 1.0, "yanchor": "top", "traceorder": "normal", "title": {"text": "Phase"}})
    return fig
