"""CPU and RAM readings through psutil: what the GPU monitor shows when there is no NVIDIA GPU."""

from __future__ import annotations

import os
import threading

import psutil

from core.gpu.readings import HostReading


def _busy_and_total(times: object) -> tuple[float, float]:
    """(busy, total) seconds of one psutil cpu_times entry; idle and I/O wait count as not busy."""
    total = float(sum(times))  # type: ignore[arg-type]
    idle = float(getattr(times, "idle", 0.0)) + float(getattr(times, "iowait", 0.0))
    return total - idle, total


class HostReader:
    """Reads CPU and RAM. CPU load is measured between two consecutive `read` calls of this reader.

    Each reader keeps its own previous CPU times (psutil's module-level `cpu_percent` state would
    be shared, and skewed, by every caller in the process). The first reading waits `first_wait_s`
    to have an interval to measure over.
    """

    def __init__(self, first_wait_s: float = 0.1) -> None:
        self._first_wait_s = first_wait_s
        self._last: list[tuple[float, float]] | None = None
        self._lock = threading.Lock()
        self._process = psutil.Process(os.getpid())

    def _cpu_percent(self) -> list[float]:
        with self._lock:
            if self._last is None:
                self._last = [_busy_and_total(t) for t in psutil.cpu_times(percpu=True)]
                threading.Event().wait(self._first_wait_s)
            now = [_busy_and_total(t) for t in psutil.cpu_times(percpu=True)]
            out = []
            for (b0, t0), (b1, t1) in zip(self._last, now):
                dt = t1 - t0
                out.append(0.0 if dt <= 0 else max(0.0, min(100.0, 100.0 * (b1 - b0) / dt)))
            self._last = now
            return out

    def read(self) -> HostReading:
        """CPU load since the previous reading, RAM in use now, and this process's resident memory."""
        per_cpu = self._cpu_percent()
        mem = psutil.virtual_memory()
        used = int(mem.total - mem.available)  # what applications hold (psutil's `used` leaves out some caches)
        return HostReading(
            cpu_percent=round(sum(per_cpu) / len(per_cpu), 1) if per_cpu else 0.0,
            per_cpu_percent=[round(p, 1) for p in per_cpu],
            cpu_count=len(per_cpu) or (psutil.cpu_count() or 1),
            memory_used_bytes=used,
            memory_total_bytes=int(mem.total),
            memory_percent=round(100.0 * used / mem.total, 1) if mem.total else 0.0,
            process_rss_bytes=int(self._process.memory_info().rss),
        )
