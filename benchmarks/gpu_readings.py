"""GPU readings: today's core.gpu (nvidia-ml-py / pynvml) against nvitop's library API (`nvitop.api`).

On a machine without an NVIDIA GPU only two things can be measured, and this script times both:
  (a) import time of the reading layer: `import pynvml` (what core.gpu imports on its first reading) against
      `import nvitop.api`, each in a fresh interpreter (median of several runs, taken in turn);
  (b) the no-GPU path, in this one process: how long a reading takes when NVML is absent. Today:
      `NvmlReader().read()` (a fresh reader each time, so NVML start-up is tried every time). nvitop:
      `Device.count()` (the cheapest call an adopted reader would make) and `Device.from_cuda_visible_devices()`
      (the call that would give us CUDA_VISIBLE_DEVICES and MIG handling), first call and cached call.
It also records whether nvitop's CUDA_VISIBLE_DEVICES parser can be tested here without a GPU.

    python benchmarks/gpu_readings.py [--runs 7]

Not a test: it prints figures and ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_IMPORT_PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def import_seconds(module: str) -> float:
    """Seconds `import module` takes in a fresh interpreter (interpreter start-up not counted)."""
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE.format(module=module)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """(median seconds per call over `runs` calls, the last result)."""
    times = []
    result = None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


class _Count(logging.Handler):
    """Counts the log records a library emits (nvitop logs a CRITICAL banner when NVML is missing)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per import measurement")
    parser.add_argument("--calls", type=int, default=200, help="calls per cheap no-GPU measurement")
    args = parser.parse_args()

    try:
        import nvitop
    except ImportError:
        print("nvitop is not installed (pip install nvitop): nothing to compare")
        return
    from core.gpu import NvmlReader, nvml_available

    print(f"# GPU readings: pynvml (nvidia-ml-py {version('nvidia-ml-py')}) vs nvitop {nvitop.__version__}; "
          f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; NVML here: {nvml_available()}")

    # (a) import time, interleaved so machine load hits both alike
    pyn: list[float] = []
    nvt: list[float] = []
    for _ in range(args.runs):
        pyn.append(import_seconds("pynvml"))
        nvt.append(import_seconds("nvitop.api"))
    a_today, a_nvitop = statistics.median(pyn), statistics.median(nvt)
    print(f"(a) import pynvml: {fmt(a_today)} (median of {args.runs}; min {fmt(min(pyn))})")
    print(f"(a) import nvitop.api: {fmt(a_nvitop)} (median of {args.runs}; min {fmt(min(nvt))})")
    print(f"(a) ratio nvitop/today: {a_nvitop / a_today:.1f}x")

    # (b) the no-GPU path, same process
    from nvitop.api import Device, libnvml
    from nvitop.api import device as nvitop_device

    counter = _Count()
    nvitop_log = logging.getLogger("nvitop")
    nvitop_log.addHandler(counter)
    nvitop_log.propagate = False  # counted, not printed

    b_today, today_result = timed(lambda: NvmlReader().read(), args.calls)
    print(f"(b) today NvmlReader().read() without NVML: {fmt(b_today)} per reading (median of {args.calls}); "
          f"reason: {today_result[1][:60]}...")

    def nvitop_count() -> str:
        try:
            return f"{Device.count()} devices"
        except libnvml.NVMLError as exc:
            return type(exc).__name__

    before = counter.n
    b_count, count_result = timed(nvitop_count, args.calls)
    print(f"(b) nvitop Device.count() without NVML: {fmt(b_count)} per call (median of {args.calls}); "
          f"-> {count_result}; {counter.n - before} log records")
    print(f"(b) ratio nvitop Device.count()/today: {b_count / b_today:.1f}x")

    cold_runs = 3
    cold: list[float] = []
    for _ in range(cold_runs):
        nvitop_device._parse_cuda_visible_devices.cache_clear()  # noqa: SLF001 - the first reading of a process
        t = time.perf_counter()
        visible = Device.from_cuda_visible_devices()
        cold.append(time.perf_counter() - t)
    b_cold = statistics.median(cold)
    b_warm, _ = timed(Device.from_cuda_visible_devices, args.calls)
    print(f"(b) nvitop Device.from_cuda_visible_devices() without NVML, first call: {fmt(b_cold)} "
          f"(median of {cold_runs}; it starts a Python subprocess that spawns another to ask libcuda) -> {visible}")
    print(f"(b) nvitop Device.from_cuda_visible_devices() without NVML, cached: {fmt(b_warm)} per call")
    print(f"(b) ratio nvitop from_cuda_visible_devices first call/today: {b_cold / b_today:.0f}x")

    # can nvitop's CUDA_VISIBLE_DEVICES parsing be tested here?
    cases = {"0,1": None, "1,0": None, "GPU-18ef14e9,GPU-849d5a8d": None, "0,0": None, "": None}
    for value in cases:
        cases[value] = Device.parse_cuda_visible_devices(value)
    print("(c) nvitop parse_cuda_visible_devices without NVML: "
          + ", ".join(f"{v!r} -> {r}" for v, r in cases.items())
          + " (needs NVML for the device list and libcuda in a subprocess: every value gives [] here)")

    slower = a_nvitop > a_today or b_count > b_today
    testable = any(cases[v] for v in ("0,1", "1,0"))
    adopt = not slower and testable
    print(f"decision: {'adopt' if adopt else 'do not adopt'} nvitop "
          f"(import {a_nvitop / a_today:.1f}x slower, no-GPU reading {b_count / b_today:.1f}x "
          f"(count) / {b_cold / b_today:.0f}x (CUDA_VISIBLE_DEVICES, first call) slower, "
          f"CUDA_VISIBLE_DEVICES parsing testable without a GPU: {testable})")


if __name__ == "__main__":
    main()
