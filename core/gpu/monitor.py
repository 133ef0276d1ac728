"""One call for everything the GPU monitor shows: `read_snapshot()` (GPUs through NVML, else CPU/RAM only)."""

from __future__ import annotations

import threading
import time

from core.gpu.host import HostReader
from core.gpu.nvml import NvmlReader
from core.gpu.readings import Snapshot


class Monitor:
    """Reads GPUs and host together. Keeps NVML open and the host CPU counter between reads. Thread-safe."""

    def __init__(self, nvml: NvmlReader | None = None, host: HostReader | None = None) -> None:
        self.nvml = nvml or NvmlReader()
        self.host = host or HostReader()

    def read(self) -> Snapshot:
        """A snapshot: `available=True` with every GPU, or `available=False` with the reason; host always filled."""
        gpus, reason = self.nvml.read()
        host = self.host.read()
        return Snapshot(
            taken_at=time.time(),
            available=bool(gpus),
            reason=reason,
            gpus=gpus,
            host=host,
            driver_version=self.nvml.driver_version if gpus else None,
        )

    def close(self) -> None:
        self.nvml.close()


_default: Monitor | None = None
_default_lock = threading.Lock()


def default_monitor() -> Monitor:
    """The process-wide monitor (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Monitor()
        return _default


def read_snapshot() -> Snapshot:
    """A snapshot from the process-wide monitor; never raises for a missing GPU or driver."""
    return default_monitor().read()
