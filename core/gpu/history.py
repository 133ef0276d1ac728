"""A bounded, thread-safe ring buffer of snapshots ("the last minutes"), and a background sampler filling it."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from core.gpu.readings import Snapshot


class History:
    """The latest `maxlen` snapshots in the order they were taken (oldest first). Thread-safe.

    Snapshots arriving out of order (two threads sampling) are placed by `taken_at`.
    """

    def __init__(self, maxlen: int = 600) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._items: deque[Snapshot] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    @property
    def maxlen(self) -> int:
        return self._items.maxlen or 0

    def add(self, snapshot: Snapshot) -> None:
        """Append one snapshot; the oldest is dropped once the buffer is full."""
        with self._lock:
            if self._items and snapshot.taken_at < self._items[-1].taken_at:
                items = sorted([*self._items, snapshot], key=lambda s: s.taken_at)
                self._items.clear()
                self._items.extend(items[-self.maxlen:])
            else:
                self._items.append(snapshot)

    def samples(self, last_s: float | None = None, now: float | None = None) -> list[Snapshot]:
        """The snapshots, oldest first; with `last_s`, only those taken in the last `last_s` seconds."""
        with self._lock:
            items = list(self._items)
        if last_s is None:
            return items
        cutoff = (time.time() if now is None else now) - last_s
        return [s for s in items if s.taken_at >= cutoff]

    def latest(self) -> Snapshot | None:
        """The newest snapshot, or None when empty."""
        with self._lock:
            return self._items[-1] if self._items else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class Sampler:
    """Takes a snapshot every `interval_s` seconds in a daemon thread and keeps them in a `History`.

    One sampler per process is enough for every viewer: the history covers the last minutes even
    while nobody has the page open. `start` takes the first snapshot before returning.
    """

    def __init__(self, read: Callable[[], Snapshot], interval_s: float = 1.0, history: History | None = None) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.read = read
        self.interval_s = interval_s
        self.history = history if history is not None else History()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def sample(self) -> Snapshot:
        """Take one snapshot now, record it, and return it."""
        snap = self.read()
        self.history.add(snap)
        return snap

    def start(self) -> "Sampler":
        """Start sampling in the background (no-op when already running); returns self."""
        with self._lock:
            if self.running:
                return self
            self._stop.clear()
            self.sample()
            self._thread = threading.Thread(target=self._loop, name="vlscope-gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval_s
            if next_at < time.monotonic():  # fell behind (machine suspended, slow read): do not catch up in a burst
                next_at = time.monotonic() + self.interval_s
            try:
                self.sample()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - keep sampling; the page shows the error
                self.last_error = str(exc)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the background thread and wait for it."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        self._thread = None
