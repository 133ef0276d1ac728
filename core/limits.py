"""A memory-aware bound on heavy work running at once (bottom layer).

Heavy work (decoding a large image, OCR of a page, reading a video's frames) asks for the bytes it
expects to hold with `hold(nbytes, what)`. Work that fits in what is free starts at once; other work
waits its turn, oldest first; after `timeout_s` it is refused with `Busy`, whose message says to try
again later, instead of the process being killed for running out of memory. One piece of work
larger than the whole budget still runs, alone. A hold inside a hold of the same thread costs nothing
more: the outer estimate covers the work inside it (so nested layers never wait for themselves).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from core.errors import Busy

GIB = 1024**3


@dataclass(frozen=True)
class WorkStats:
    """What the bound holds now: budget, bytes held, pieces running and waiting."""

    capacity_bytes: int
    held_bytes: int
    running: int
    waiting: int


class HeavyWork:
    """A weighted semaphore in bytes, fair (first come, first served)."""

    def __init__(self, capacity_bytes: int, timeout_s: float = 60.0) -> None:
        if capacity_bytes <= 0:
            raise ValueError("capacity_bytes must be positive")
        self.capacity = int(capacity_bytes)
        self.timeout_s = float(timeout_s)
        self._cond = threading.Condition()
        self._held = 0
        self._running = 0
        self._queue: list[object] = []
        self._local = threading.local()

    def _fits(self, n: int) -> bool:
        return self._running == 0 or self._held + n <= self.capacity

    @contextmanager
    def hold(self, nbytes: int, what: str = "this work", timeout_s: float | None = None) -> Iterator[None]:
        """Hold `nbytes` of the budget while the block runs; raises Busy after waiting `timeout_s`."""
        if getattr(self._local, "depth", 0):
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        n = max(0, min(int(nbytes), self.capacity))
        timeout = self.timeout_s if timeout_s is None else float(timeout_s)
        ticket = object()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._queue.append(ticket)
            try:
                while not (self._queue[0] is ticket and self._fits(n)):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise Busy(
                            f"The server is busy: {what} needs about {n / GIB:.1f} GiB of memory and other work "
                            f"holds {self._held / GIB:.1f} of the {self.capacity / GIB:.1f} GiB allowed at once.",
                            "Try again in a minute, or raise VLSCOPE_HEAVY_WORK_MEMORY_GB on a machine with more RAM.",
                        )
                    self._cond.wait(left)
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()
            self._held += n
            self._running += 1
        self._local.depth = 1
        try:
            yield
        finally:
            self._local.depth = 0
            with self._cond:
                self._held -= n
                self._running -= 1
                self._cond.notify_all()

    def stats(self) -> WorkStats:
        with self._cond:
            return WorkStats(self.capacity, self._held, self._running, len(self._queue))


def default_capacity_bytes() -> int:
    """Half of the RAM available now (at least 1 GiB)."""
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil is a dependency
        available = 8 * GIB
    return max(GIB, available // 2)


_shared: HeavyWork | None = None
_shared_lock = threading.Lock()


def heavy_work(settings: Any | None = None) -> HeavyWork:
    """The process-wide bound, built on first use from `heavy_work_memory_gb` / `busy_timeout_s`."""
    global _shared
    with _shared_lock:
        if _shared is None:
            gb = getattr(settings, "heavy_work_memory_gb", None) if settings is not None else None
            timeout = getattr(settings, "busy_timeout_s", 60.0) if settings is not None else 60.0
            capacity = int(gb * GIB) if gb else default_capacity_bytes()
            _shared = HeavyWork(capacity, timeout)
        return _shared


def reset_heavy_work() -> None:
    """Forget the process-wide bound (tests, or after settings change)."""
    global _shared
    with _shared_lock:
        _shared = None
