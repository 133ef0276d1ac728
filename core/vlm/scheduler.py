"""Who gets the model when: the local engine's requests, its queue, the batch window and the dispatch threads.

A request that can share a batch (fast path, no kept prefix, no seed) joins a queue; a dispatch thread takes
the model, waits `batch_window_ms` for more requests to arrive, and hands up to `max_batch_size` compatible
ones (same sampling settings) to the runner together. Any other request waits for the model in the caller's
thread and then runs alone in a worker thread.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from core.settings import Settings
from core.vlm.base import EngineError
from core.vlm.prefix import PrefixPlan
from core.vlm.types import GenerationParams


class RequestStatus(enum.Enum):
    """Where a request is: waiting for the model, running on it, or finished (with its answer or an error)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(eq=False)
class Request:
    """One request to the local engine, from its rendered inputs to its generated tokens."""

    params: GenerationParams
    streamer: Any
    """Receives the prompt, then the new tokens; the consumer iterates its text."""
    prompt_length: int
    visual_tokens: int
    inputs: dict[str, Any] | None = None
    """The processor's tensors on the model's device (None when the request uses a kept prefix)."""
    prefix: PrefixPlan | None = None
    can_batch: bool = False
    """Whether it may share a batch: fast path, no kept prefix, no seed."""
    created: float = 0.0
    rendered: float = 0.0
    started: float | None = None
    """When it got the model (perf_counter seconds)."""
    ended: float | None = None
    status: RequestStatus = RequestStatus.QUEUED
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    worker: threading.Thread | None = None
    new_ids: Any = None
    """The generated token ids (1-D, the final EOS included), once done."""
    error: EngineError | None = None
    reused_tokens: int = 0
    fast_stats: Any = None
    """The fast decoder's FastDecodeStats (None on the plain path)."""
    peak_bytes: int | None = None
    batch_size: int = 1

    def batch_signature(self) -> tuple[Any, ...]:
        """Requests batch together only when they decode the same way."""
        p = self.params
        return (p.greedy, p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.presence_penalty)

    def wait(self) -> None:
        """Until it is finished and its thread has ended (no thread left in native code at interpreter exit)."""
        self.done.wait()
        if self.worker is not None:
            self.worker.join()


class Scheduler:
    """Serialises the model between requests and batches compatible ones; `run(group)` does the device work
    for 1..N requests and never raises (each request gets its new ids or its error)."""

    def __init__(self, settings: Settings, run: Callable[[list[Request]], None]) -> None:
        self.settings = settings
        self._run = run
        self.lock = threading.Lock()
        """Held while the model runs."""
        self._queue: list[Request] = []
        self._queue_lock = threading.Lock()

    def submit(self, request: Request) -> None:
        """Start serving `request`: queued for a batch, or alone once the model is free (this call waits for it)."""
        if self.settings.max_batch_size > 1 and request.can_batch:
            with self._queue_lock:
                self._queue.append(request)
            request.worker = threading.Thread(target=self._dispatch, name="vlscope-batch", daemon=True)
        else:
            self.lock.acquire()
            request.started = time.perf_counter()
            request.worker = threading.Thread(target=self._serve_alone, args=(request,), name="vlscope-generate",
                                              daemon=True)
        request.worker.start()

    def _serve_alone(self, request: Request) -> None:
        """Run one request; the lock was taken by `submit`, and is given back before the request is done."""
        request.status = RequestStatus.RUNNING
        try:
            self._run([request])
        finally:
            request.ended = time.perf_counter()
            self.lock.release()
            self._finish(request)

    def _dispatch(self) -> None:
        """Serve queued requests: whoever gets the model takes up to `max_batch_size` compatible ones."""
        with self.lock:
            with self._queue_lock:
                waiting = bool(self._queue)
            if not waiting:
                return  # an earlier dispatcher already served this request
            if self.settings.batch_window_ms > 0:
                time.sleep(self.settings.batch_window_ms / 1000)  # let requests arriving together join
            with self._queue_lock:
                if not self._queue:
                    return  # an earlier dispatcher already served this request
                head = self._queue[0]
                group = [r for r in self._queue if r.batch_signature() == head.batch_signature()]
                group = group[: self.settings.max_batch_size]
                for r in group:
                    self._queue.remove(r)
            started = time.perf_counter()
            for r in group:
                r.started, r.batch_size, r.status = started, len(group), RequestStatus.RUNNING
            try:
                self._run(group)
            finally:
                ended = time.perf_counter()
                for r in group:
                    r.ended = ended
                    self._finish(r)

    @staticmethod
    def _finish(request: Request) -> None:
        request.status = RequestStatus.FAILED if request.error is not None else RequestStatus.DONE
        request.done.set()
