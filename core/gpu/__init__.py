"""GPU readings through NVML (nvidia-ml-py), with a CPU/RAM fallback, and a history of the last minutes.

    from core.gpu import read_snapshot, Sampler
    snap = read_snapshot()          # Snapshot(available, reason, gpus=[GpuReading...], host=HostReading)
    sampler = Sampler(read_snapshot, interval_s=1.0).start()
    sampler.history.samples(last_s=300)

No Streamlit here: the GPU monitor page and the CLI read the same objects.
"""

from core.gpu.history import History, Sampler
from core.gpu.host import HostReader
from core.gpu.monitor import Monitor, default_monitor, read_snapshot
from core.gpu.nvml import NvmlReader, NvmlUnavailable, explain_nvml_error, nvml_available
from core.gpu.readings import GpuProcess, GpuReading, HostReading, Snapshot

__all__ = [
    "GpuProcess",
    "GpuReading",
    "History",
    "HostReader",
    "HostReading",
    "Monitor",
    "NvmlReader",
    "NvmlUnavailable",
    "Sampler",
    "Snapshot",
    "default_monitor",
    "explain_nvml_error",
    "nvml_available",
    "read_snapshot",
]
