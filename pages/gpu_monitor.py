"""GPU monitor: live GPU readings (or CPU and RAM when there is no NVIDIA GPU), the last minutes
as a chart, and what each model request cost. Logic lives in core.gpu and core.charts."""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from core.charts import gpu_history_figure, host_history_figure, ledger_figure, ledger_table
from core.gpu import GpuReading, History, Sampler, Snapshot, read_snapshot
from ui.safe import shown
from ui.state import get_engine, sidebar_generation_params

SAMPLE_EVERY_S = 1.0
HISTORY_MINUTES = 10
GIB = 1024**3
MIB = 1024**2


def _stop_sampler(sampler: Sampler) -> None:
    sampler.stop(timeout_s=2.0)


@st.cache_resource(show_spinner=False, on_release=_stop_sampler)
def get_sampler() -> Sampler:
    """One background sampler per server process (one reading a second, the last 10 minutes kept),
    so the history is there even for a viewer who has just opened the page."""
    history = History(maxlen=int(HISTORY_MINUTES * 60 / SAMPLE_EVERY_S))
    return Sampler(read_snapshot, interval_s=SAMPLE_EVERY_S, history=history).start()


def _num(value: float | None, fmt: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def _gib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / GIB:.1f}"


def _last(minutes: int) -> str:
    return "The last minute" if minutes == 1 else f"The last {minutes} minutes"


def render_gpu(gpu: GpuReading) -> None:
    with st.container(border=True):
        st.markdown(f"**GPU {gpu.index} · {gpu.name}** · {_gib(gpu.memory_total_bytes)} GiB · "
                    f"power limit {_num(gpu.power_limit_w, '.0f', ' W')}")
        c = st.columns(6)
        c[0].metric("Utilisation", _num(gpu.utilization_percent, ".0f", " %"),
                    help="share of the last sample period in which the GPU was running work")
        c[1].metric("Memory used", f"{_gib(gpu.memory_used_bytes)} GiB",
                    help=f"{_num(gpu.memory_percent, '.0f', ' %')} of the card's {_gib(gpu.memory_total_bytes)} GiB")
        c[2].metric("Temperature", _num(gpu.temperature_c, ".0f", " °C"))
        c[3].metric("Power", _num(gpu.power_draw_w, ".0f", " W"),
                    help=f"drawn now; the driver's limit is {_num(gpu.power_limit_w, '.0f', ' W')}")
        c[4].metric("SM clock (MHz)", _num(gpu.sm_clock_mhz, "d"), help="streaming multiprocessor (compute) clock")
        c[5].metric("Memory clock (MHz)", _num(gpu.memory_clock_mhz, "d"))
        if gpu.processes:
            st.dataframe(
                [{"PID": p.pid, "Process": p.name, "Type": p.kind,
                  "GPU memory (MiB)": None if p.used_memory_bytes is None else round(p.used_memory_bytes / MIB)}
                 for p in gpu.processes],
                hide_index=True, key=f"gpu_procs_{gpu.index}", placeholder="unknown",
            )
        else:
            st.caption("No process is using this GPU.")


def render_gpus(snap: Snapshot, samples: list[Snapshot], minutes: int) -> None:
    st.caption(f"{len(snap.gpus)} NVIDIA GPU(s) · driver {snap.driver_version or 'unknown'}")
    for gpu in snap.gpus:
        render_gpu(gpu)
    st.subheader(_last(minutes))
    st.plotly_chart(gpu_history_figure(samples, window_s=minutes * 60, now=snap.taken_at), key="gpu_history")


def render_host(snap: Snapshot, samples: list[Snapshot], minutes: int) -> None:
    st.warning("**No NVIDIA GPU available, so this page shows the CPU and RAM instead.** "
               "The model runs on the CPU here: it works, but slowly.", icon=":material/memory:")
    st.caption(f"Why: {shown(snap.reason)}")
    h = snap.host
    c = st.columns(4)
    c[0].metric("CPU load", f"{h.cpu_percent:.0f} %",
                help="all cores together; per core: " + ", ".join(f"{p:.0f} %" for p in h.per_cpu_percent))
    c[1].metric("CPU cores", str(h.cpu_count))
    c[2].metric("RAM used", f"{h.memory_used_bytes / GIB:.1f} / {h.memory_total_bytes / GIB:.1f} GiB",
                help=f"{h.memory_percent:.0f} % of this machine's memory")
    c[3].metric("This app's memory", f"{h.process_rss_bytes / GIB:.2f} GiB",
                help="memory held by the dashboard process, including the model once it is loaded")
    st.subheader(_last(minutes))
    st.plotly_chart(host_history_figure(samples, window_s=minutes * 60, now=snap.taken_at), key="host_history")


def _size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.1f} KiB"


def render_prefixes() -> None:
    """The videos' prefix KV caches kept for follow-up questions: per tier, entries, size and limit."""
    st.subheader("Kept video prefixes")
    report_of = getattr(get_engine(), "prefix_report", None)
    if report_of is None:
        st.caption("This engine keeps no video prefixes here: the remote server keeps its own caches.")
        return
    report = report_of()
    if report is None:
        st.caption("Nothing kept yet: the tiers are sized from the free memory when the model loads.")
        return
    st.dataframe([{"Tier": t.tier, "Entries": t.entries, "Kept": _size(t.bytes), "Limit": _size(t.limit_bytes)}
                  for t in report.tiers], hide_index=True, key="prefix_tiers")
    st.caption(shown(f"{report.hits} follow-up(s) reused a kept prefix, {report.misses} computed one. "
                     f"{report.reason}"))
    if report.note:
        st.caption(shown(report.note))


def render_ledger() -> None:
    st.subheader("Model requests")
    records = get_engine().ledger.records()
    if not records:
        st.info("No model requests yet since the dashboard started. Every question or caption sent to the model, "
                "from any page or browser tab, appears here with what it cost: visual tokens, prefill time, "
                "time to first token, tokens per second and peak GPU memory.")
        return
    n = len(records)
    st.caption(f"{n} request{'s' if n != 1 else ''} to the model since the dashboard started, newest first.")
    st.dataframe(ledger_table(records), hide_index=True, key="ledger_table", placeholder="–",
                 column_config={"Time": st.column_config.DatetimeColumn(format="HH:mm:ss")})
    st.plotly_chart(ledger_figure(records), key="ledger_chart")


sidebar_generation_params()
st.title("GPU monitor")
st.write("Live readings of the NVIDIA GPUs on the machine that runs VLScope, and what each model request cost.")

controls = st.columns([1, 2, 2])
paused = controls[0].toggle("Pause live updates", key="gpu_paused")
interval = controls[1].select_slider("Refresh every", options=[1, 2, 5, 10, 30], value=1, key="gpu_interval",
                                     format_func=lambda s: f"{s} s", disabled=paused)
minutes = controls[2].select_slider("History shown", options=[1, 2, 5, 10], value=5, key="gpu_minutes",
                                    format_func=lambda m: f"{m} min")


@st.fragment(run_every=None if paused else interval)
def live() -> None:
    sampler = get_sampler()
    snap = sampler.history.latest() or sampler.sample()
    samples = sampler.history.samples(last_s=minutes * 60)
    if snap.available:
        render_gpus(snap, samples, minutes)
    else:
        render_host(snap, samples, minutes)
    state = "paused" if paused else f"refreshing every {interval} s"
    st.caption(f"Reading of {datetime.fromtimestamp(snap.taken_at):%H:%M:%S} · {state} · "
               f"sampled every {SAMPLE_EVERY_S:.0f} s in the background ({len(samples)} in the chart)")
    render_prefixes()
    render_ledger()


live()
