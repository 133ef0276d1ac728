"""The job registry: one per process, threads underneath; see core.jobs."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from core.errors import Cancelled, UserError

log = logging.getLogger(__name__)


class JobState(str, Enum):
    """Where a job is: running, then exactly one of done, failed or cancelled."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class JobSnapshot:
    """A consistent copy of a job's state for display (safe to read from any thread)."""

    key: str
    title: str
    state: JobState
    fraction: float
    message: str
    started_at: float
    finished_at: float | None
    elapsed_s: float
    eta_s: float | None
    error: str | None
    stage: str = ""
    log: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """True while the job runs."""
        return self.state is JobState.RUNNING


class JobContext:
    """What a work function receives: `progress(fraction, message, stage="")`, `cancel` (a threading.Event)."""

    def __init__(self, job: "Job") -> None:
        self._job = job
        self.cancel: threading.Event = job._cancel

    def progress(self, fraction: float, message: str = "", stage: str = "") -> None:
        """Report overall progress (0..1) and what is being done."""
        self._job._report(fraction, message, stage)

    @property
    def cancelled(self) -> bool:
        """True once cancel was asked."""
        return self.cancel.is_set()


Work = Callable[[JobContext], Any]


class Job:
    """One background job. Read it with `snapshot()`; `result` once done; `cancel()` to stop it.

    The work runs inside a copy of the context the job was created in, so context variables (the signed-in
    user of `core.auth.current_user()`) are those of whoever submitted it.
    """

    def __init__(self, key: str, title: str, work: Work, clock: Callable[[], float] = time.monotonic) -> None:
        self.key = key
        self.title = title
        self._work = work
        self._clock = clock
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._state = JobState.RUNNING
        self._fraction = 0.0
        self._message = "starting"
        self._stage = ""
        self._log: list[str] = []
        self._started_wall = time.time()
        self._started = clock()
        self._finished: float | None = None
        self._finished_wall: float | None = None
        self._first_progress: tuple[float, float] | None = None  # (time, fraction) of the first report
        self.result: Any = None
        self.error: str | None = None
        self.exception: BaseException | None = None
        self._context = contextvars.copy_context()
        self._thread = threading.Thread(target=self._context.run, args=(self._run,), name=f"job:{key}", daemon=True)

    def start(self) -> "Job":
        self._thread.start()
        return self

    # -- worker side ------------------------------------------------------------------
    def _report(self, fraction: float, message: str, stage: str) -> None:
        now = self._clock()
        fraction = min(1.0, max(0.0, float(fraction)))
        with self._lock:
            if self._first_progress is None:
                self._first_progress = (now, fraction)
            self._fraction = max(self._fraction, fraction)
            if message:
                self._message = message
                if not self._log or self._log[-1] != message:
                    self._log.append(message)
                    del self._log[:-50]
            if stage:
                self._stage = stage

    def _run(self) -> None:
        try:
            result = self._work(JobContext(self))
        except BaseException as exc:  # noqa: BLE001 - the job records every failure; the app keeps running
            cancelled = self._cancel.is_set() or isinstance(exc, Cancelled)
            with self._lock:
                self.exception = exc
                self._state = JobState.CANCELLED if cancelled else JobState.FAILED
                self.error = None if cancelled else (str(exc) or "it failed unexpectedly (no message); see the server's log")
                self._message = "cancelled: the parts finished so far are saved" if cancelled else f"failed: {self.error}"
            if not cancelled:
                log.warning("job %s failed: %s", self.key, exc, exc_info=not _user_error(exc))
        else:
            with self._lock:
                self.result = result
                if self._cancel.is_set():
                    self._state = JobState.CANCELLED
                    self._message = "cancelled: the parts finished so far are saved"
                else:
                    self._state = JobState.DONE
                    self._fraction = 1.0
                    self._message = "done"
        finally:
            with self._lock:
                self._finished = self._clock()
                self._finished_wall = time.time()

    # -- reader side ------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the work to stop at its next check (it keeps what it already saved)."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (True) or `timeout` passes (False)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def state(self) -> JobState:
        with self._lock:
            return self._state

    def snapshot(self) -> JobSnapshot:
        """The job's state now, with elapsed time and the ETA (None until progress allows an estimate)."""
        with self._lock:
            end = self._finished if self._finished is not None else self._clock()
            elapsed = end - self._started
            eta = None
            if self._state is JobState.RUNNING and self._first_progress is not None:
                t0, f0 = self._first_progress
                done = self._fraction - f0
                spent = end - t0
                if done > 0.01 and spent > 0:
                    eta = max(0.0, spent / done * (1.0 - self._fraction))
            return JobSnapshot(self.key, self.title, self._state, self._fraction, self._message, self._started_wall,
                               self._finished_wall, elapsed, eta, self.error, self._stage, list(self._log))


def _user_error(exc: BaseException) -> bool:
    return isinstance(exc, UserError)


class JobRegistry:
    """Every job of this process by key; finished jobs are kept (the newest `keep`) so pages can show results."""

    def __init__(self, keep: int = 50) -> None:
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def submit(self, key: str, title: str, work: Work, restart: bool = False) -> Job:
        """Start `work` as job `key`, or return the job of that key that is still running.

        A finished job of the same key is replaced by a new run (which resumes from saved parts);
        `restart=False` keeps a running one.
        """
        with self._lock:
            old = self._jobs.get(key)
            if old is not None and old.state is JobState.RUNNING and not restart:
                return old
            if old is not None and old.state is JobState.RUNNING:
                old.cancel()
            job = Job(key, title, work)
            self._jobs[key] = job
            self._prune()
        return job.start()

    def get(self, key: str) -> Job | None:
        """The job of `key` (running or finished), or None."""
        with self._lock:
            return self._jobs.get(key)

    def forget(self, key: str) -> None:
        """Drop a finished job (a running one is cancelled first)."""
        with self._lock:
            job = self._jobs.pop(key, None)
        if job is not None and job.state is JobState.RUNNING:
            job.cancel()

    def jobs(self, prefix: str = "") -> list[Job]:
        """Jobs whose key starts with `prefix`, newest first."""
        with self._lock:
            items = [j for k, j in self._jobs.items() if k.startswith(prefix)]
        return sorted(items, key=lambda j: j._started, reverse=True)

    def running(self) -> list[Job]:
        """Jobs still running."""
        return [j for j in self.jobs() if j.state is JobState.RUNNING]

    def _prune(self) -> None:
        finished = sorted((j for j in self._jobs.values() if j.state is not JobState.RUNNING), key=lambda j: j._started)
        for job in finished[: max(0, len(finished) - self._keep)]:
            self._jobs.pop(job.key, None)


_REGISTRY: JobRegistry | None = None
_REGISTRY_LOCK = threading.Lock()


def registry() -> JobRegistry:
    """The process-wide registry (shared by every browser session and thread)."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            _REGISTRY = JobRegistry()
        return _REGISTRY


def format_eta(seconds: float | None) -> str:
    """'about 1 min 20 s left', 'about 12 s left', or 'estimating time left' when unknown."""
    if seconds is None:
        return "estimating time left"
    s = int(round(seconds))
    if s >= 3600:
        return f"about {s // 3600} h {s % 3600 // 60} min left"
    if s >= 60:
        return f"about {s // 60} min {s % 60} s left"
    return f"about {s} s left"
