"""Plotly figure builders: pure functions, data in, figure out (no Streamlit).

    gpu_history_figure(samples)   GPU utilisation, memory, temperature, power over time (one line per GPU)
    host_history_figure(samples)  CPU load and RAM used over time (the no-GPU fallback)
    ledger_figure(records)        the engine's requests: time per phase, tokens/s, visual tokens
    ledger_table(records)         the same requests as a pandas table
"""

from core.charts.gpu import GPU_PANELS, gpu_history_figure, host_history_figure
from core.charts.ledger import PHASES, TABLE_COLUMNS, decode_ms, ledger_figure, ledger_table, request_labels

__all__ = [
    "GPU_PANELS",
    "PHASES",
    "TABLE_COLUMNS",
    "decode_ms",
    "gpu_history_figure",
    "host_history_figure",
    "ledger_figure",
    "ledger_table",
    "request_labels",
]
