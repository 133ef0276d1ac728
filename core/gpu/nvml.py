"""NVIDIA GPU readings through NVML (the `pynvml` module of the `nvidia-ml-py` package).

`NvmlReader.read()` never raises: when NVML cannot be used it returns no GPUs and a reason in
plain words. NVML sees every GPU of the host (it ignores CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import psutil

from core.gpu.readings import GpuProcess, GpuReading

_NOT_AVAILABLE = 2**63  # NVML reports "not available" memory as ULLONG_MAX; anything this large is unknown


class NvmlUnavailable(Exception):
    """NVML cannot be used on this machine; the message says why and what to do."""


def explain_nvml_error(exc: BaseException) -> str:
    """A user-facing sentence for an NVML start-up failure."""
    import pynvml

    if isinstance(exc, pynvml.NVMLError_LibraryNotFound):
        return ("No NVIDIA driver on this machine: the NVML library (libnvidia-ml.so.1) was not found. "
                "On a GPU server, install the NVIDIA driver (nvidia-smi must work).")
    if isinstance(exc, pynvml.NVMLError_DriverNotLoaded):
        return "The NVIDIA driver is installed but not loaded (check that nvidia-smi works; a reboot may be needed)."
    if isinstance(exc, pynvml.NVMLError_NoPermission):
        return "No permission to read the NVIDIA GPUs (NVML refused access to this user)."
    if isinstance(exc, pynvml.NVMLError_InsufficientSize) or isinstance(exc, pynvml.NVMLError_FunctionNotFound):
        return f"The NVIDIA driver is too old for this nvidia-ml-py ({exc})."
    return f"NVML failed to start: {exc}."


def nvml_available() -> bool:
    """True when NVML starts here (an NVIDIA driver is loaded); opens and closes NVML once."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - ImportError or any NVMLError means "no"
        return False
    try:
        pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001
        pass
    return True


def _try(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), or None when the GPU does not support or report this field."""
    import pynvml

    try:
        return fn(*args)
    except pynvml.NVMLError:
        return None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _process_name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        pass
    import pynvml

    name = _try(pynvml.nvmlSystemGetProcessName, pid)
    return _text(name) if name else "(not visible from here, e.g. another container)"


class NvmlReader:
    """Reads every NVIDIA GPU through NVML; initialises NVML on first use and keeps it open.

    Thread-safe. If NVML fails to start, the next `read` tries again (the driver may be loaded later).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = False
        self._driver: str | None = None

    def _start(self) -> None:
        try:
            import pynvml
        except ImportError as exc:  # the package is a dependency; a broken install is still a clear message
            raise NvmlUnavailable("nvidia-ml-py is not installed, so GPUs cannot be read (pip install nvidia-ml-py).") from exc
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlUnavailable(explain_nvml_error(exc)) from exc
        self._started = True
        self._driver = _text(_try(pynvml.nvmlSystemGetDriverVersion) or "") or None

    @property
    def driver_version(self) -> str | None:
        """The NVIDIA driver version, once NVML has started."""
        return self._driver

    def read(self) -> tuple[list[GpuReading], str]:
        """(readings of every GPU, reason). reason is "" when GPUs were read, else why not."""
        with self._lock:
            try:
                if not self._started:
                    self._start()
                return self._read_all()
            except NvmlUnavailable as exc:
                return [], str(exc)
            except Exception as exc:  # noqa: BLE001 - a driver fault must not break the page
                return [], f"Reading the NVIDIA GPUs failed: {exc}."

    def _read_all(self) -> tuple[list[GpuReading], str]:
        import pynvml

        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            return [], "The NVIDIA driver is loaded but reports no GPU."
        return [self._read_one(i) for i in range(count)], ""

    def _read_one(self, index: int) -> GpuReading:
        import pynvml

        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        util = _try(pynvml.nvmlDeviceGetUtilizationRates, h)
        mem = _try(pynvml.nvmlDeviceGetMemoryInfo, h)
        power_mw = _try(pynvml.nvmlDeviceGetPowerUsage, h)
        limit_mw = _try(pynvml.nvmlDeviceGetEnforcedPowerLimit, h)
        temp = _try(pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU)
        return GpuReading(
            index=index,
            name=_text(_try(pynvml.nvmlDeviceGetName, h) or f"GPU {index}"),
            uuid=_text(_try(pynvml.nvmlDeviceGetUUID, h) or ""),
            utilization_percent=float(util.gpu) if util is not None else None,
            memory_used_bytes=int(mem.used) if mem is not None else None,
            memory_total_bytes=int(mem.total) if mem is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            power_draw_w=power_mw / 1000.0 if power_mw is not None else None,
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            sm_clock_mhz=_try(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM),
            memory_clock_mhz=_try(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_MEM),
            processes=self._processes(h),
        )

    @staticmethod
    def _processes(h: Any) -> list[GpuProcess]:
        import pynvml

        seen: dict[int, GpuProcess] = {}
        for kind, fn in (("compute", pynvml.nvmlDeviceGetComputeRunningProcesses),
                         ("graphics", pynvml.nvmlDeviceGetGraphicsRunningProcesses)):
            for p in _try(fn, h) or []:
                used = getattr(p, "usedGpuMemory", None)
                used = None if used is None or used >= _NOT_AVAILABLE else int(used)
                if p.pid in seen:  # a process doing both compute and graphics is listed once
                    seen[p.pid].kind = "compute+graphics"
                    continue
                seen[p.pid] = GpuProcess(pid=int(p.pid), name=_process_name(int(p.pid)), used_memory_bytes=used, kind=kind)
        return sorted(seen.values(), key=lambda p: -(p.used_memory_bytes or 0))

    def close(self) -> None:
        """Shut NVML down (a later `read` starts it again)."""
        with self._lock:
            if self._started:
                import pynvml

                _try(pynvml.nvmlShutdown)
                self._started = False
