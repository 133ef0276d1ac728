"""Decoding in worker processes: the PyAV reader of `core.media.decode.pyav_select`, run in a child Python process.

Why: an ingest of a long video walks every source frame (18,000 for 10 minutes at 30 fps) in Python, several
stretches at once. In the model's process those loops hold the GIL often enough to halve the speed of the
prefill that runs beside them (benchmarks/ingest_contention.py). In child processes they hold their own GIL.

The protocol is JSON lines plus raw pixel bytes over the child's pipes (nothing pickled):
  parent -> child: one JSON object per stretch (the arguments of `pyav_select`);
  child -> parent: per frame a JSON header {"i", "t", "k", "shape"} and the frame's uint8 bytes; at the end of the
  stretch {"end": report} or {"error": message, "type": name, "report": report}.
A child decodes a stretch ahead into a bounded queue while the parent is still reading an earlier stretch from
another child. A stretch the parent stops reading (cancel, stall) ends its child; a pool starts another when asked.

    python -m core.media.decodeproc   # a worker (started by `DecoderPool`, not by hand)
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np

from core.media.decode import DecodedFrame, DecodeReport, pyav_select
from core.media.errors import Cancelled, VideoError

log = logging.getLogger(__name__)

AHEAD_BYTES = 96 * 2**20
"""Pixels a worker decodes ahead of the parent's reading, at most (per worker)."""
WORKER_NICE = 10
"""How much lower a worker's CPU priority is: eight workers' FFmpeg threads fill every core, and the model's thread,
which launches the GPU's work, must still get one when it needs it (benchmarks/ingest_contention.py)."""


class WorkerFailed(RuntimeError):
    """A decoding worker could not be started or stopped mid-stretch."""


def _report_dict(report: DecodeReport) -> dict[str, Any]:
    return {"spans": [list(s) for s in report.spans], "bad": report.bad_packets}


def _merge_report(report: DecodeReport, data: dict[str, Any] | None) -> None:
    if not data:
        return
    report.bad_packets += int(data.get("bad", 0))
    for a, b in data.get("spans", []):
        report.add_span(float(a), float(b))


class DecodeWorker:
    """One child process decoding stretches, one at a time, for whoever holds it."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "core.media.decodeproc"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=root)
        except OSError as exc:
            raise WorkerFailed(f"a decoding process could not be started: {exc}") from exc
        self.out = self.proc.stdout
        assert self.out is not None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a killed child always ends
            pass
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass

    def _line(self) -> dict[str, Any]:
        line = self.out.readline()
        if not line:
            code = self.proc.poll()
            raise WorkerFailed(f"the decoding process ended mid-stretch (exit code {code}); it may have run out of "
                               "memory. The rest of the video was not read.")
        return json.loads(line)

    def _read_exact(self, into: memoryview) -> None:
        got = 0
        while got < len(into):
            n = self.out.readinto(into[got:])
            if not n:
                raise WorkerFailed("the decoding process ended in the middle of a frame")
            got += n

    def run(self, spec: dict[str, Any], report: DecodeReport, stop: threading.Event) -> Iterator[DecodedFrame]:
        """Decode one stretch (`spec`: the arguments of `pyav_select`); frames as they come, `report` filled in.
        Raises what the child raised (VideoError, Cancelled; others as RuntimeError with the child's message)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(spec).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            if stop.is_set():
                raise WorkerFailed("stopped")
            head = self._line()
            if "end" in head:
                _merge_report(report, head["end"])
                return
            if "error" in head:
                _merge_report(report, head.get("report"))
                kind = {"VideoError": VideoError, "Cancelled": Cancelled}.get(head.get("type"), RuntimeError)
                raise kind(head["error"])
            image = np.empty(tuple(head["shape"]), dtype=np.uint8)
            self._read_exact(memoryview(image).cast("B"))
            yield DecodedFrame(int(head["i"]), float(head["t"]), image, bool(head["k"]))


class DecoderPool:
    """Worker processes kept between stretches (and ingests): each starts once, about 0.2 s."""

    def __init__(self) -> None:
        self._idle: list[DecodeWorker] = []
        self._lock = threading.Lock()
        self._all: set[DecodeWorker] = set()
        self._usable: bool | None = None

    def usable(self) -> bool:
        """Whether a worker starts here (tried once; a sandbox may forbid child processes)."""
        if self._usable is None:
            try:
                self.release(self.acquire(), True)
                self._usable = True
            except WorkerFailed as exc:
                log.warning("decoding stays in threads: %s", exc)
                self._usable = False
        return self._usable

    def warm(self, workers: int) -> None:
        """Start workers until `workers` are up (each imports PyAV meanwhile, beside whatever the caller does next)."""
        try:
            while len(self) < workers:
                worker = DecodeWorker()
                with self._lock:
                    self._all.add(worker)
                    self._idle.append(worker)
        except WorkerFailed as exc:
            log.warning("fewer decoding processes than asked: %s", exc)

    def acquire(self) -> DecodeWorker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                self._all.discard(worker)
        worker = DecodeWorker()
        with self._lock:
            self._all.add(worker)
        return worker

    def release(self, worker: DecodeWorker, healthy: bool) -> None:
        with self._lock:
            if healthy and worker.alive():
                self._idle.append(worker)
                return
            self._all.discard(worker)
        worker.close()

    def close(self) -> None:
        with self._lock:
            workers, self._all, self._idle = list(self._all), set(), []
        for worker in workers:
            worker.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._all)


_POOL: DecoderPool | None = None
_POOL_LOCK = threading.Lock()


def shared_pool() -> DecoderPool:
    """The process's decoder pool (workers end with the process)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = DecoderPool()
            atexit.register(_POOL.close)
        return _POOL


def process_select(pool: DecoderPool, path: str, fps: float, start_time: float, rotation: int, targets: list[int],
                   size: tuple[int, int] | None, key_frames_only: bool = False, from_time: float | None = None,
                   report: DecodeReport | None = None) -> Callable[[threading.Event], Iterator[DecodedFrame]]:
    """`pyav_select` with the same arguments, decoded in one of `pool`'s worker processes (RGB frames)."""
    report = report if report is not None else DecodeReport()
    spec = {"path": str(path), "fps": float(fps), "start_time": float(start_time), "rotation": int(rotation),
            "targets": [int(t) for t in targets], "size": list(size) if size else None,
            "key_frames_only": bool(key_frames_only), "from_time": from_time}

    def produce(stop: threading.Event) -> Iterator[DecodedFrame]:
        worker = pool.acquire()
        healthy = False
        try:
            yield from worker.run(spec, report, stop)
            healthy = True
        except (VideoError, Cancelled, RuntimeError) as exc:
            healthy = not isinstance(exc, WorkerFailed)  # the child answered: it is fine for the next stretch
            raise
        finally:  # a stretch left mid-way (stopped, or its reader gone) leaves bytes in the pipe: that child ends
            pool.release(worker, healthy)

    return produce


def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """The worker's loop: a stretch per line of `inp`, frames and the end line to `out`."""
    for line in inp:
        if not line.strip():
            continue
        spec = json.loads(line)
        report = DecodeReport()
        stop = threading.Event()
        size = tuple(spec["size"]) if spec.get("size") else None
        produce = pyav_select(spec["path"], spec["fps"], spec["start_time"], spec["rotation"], spec["targets"],
                              size, key_frames_only=spec["key_frames_only"], from_time=spec["from_time"],
                              report=report)
        ahead: queue.Queue[Any] = queue.Queue()
        total = max(1, AHEAD_BYTES // 2**20)
        room = threading.Semaphore(total)

        def decode() -> None:  # decodes ahead while the writes wait for the parent
            try:
                for frame in produce(stop):
                    image = np.ascontiguousarray(frame.image, dtype=np.uint8)
                    units = min(total, max(1, image.nbytes // 2**20))
                    for _ in range(units):
                        room.acquire()
                    ahead.put((frame, image, units))
                ahead.put(("end", _report_dict(report)))
            except BaseException as exc:  # noqa: BLE001 - handed to the parent as text
                ahead.put(("error", {"error": str(exc) or type(exc).__name__, "type": type(exc).__name__,
                                     "report": _report_dict(report)}))

        thread = threading.Thread(target=decode, daemon=True)
        thread.start()
        while True:
            item = ahead.get()
            if item[0] == "end":
                out.write(json.dumps({"end": item[1]}).encode() + b"\n")
                break
            if item[0] == "error":
                out.write(json.dumps(item[1]).encode() + b"\n")
                break
            frame, image, units = item
            out.write(json.dumps({"i": frame.index, "t": frame.time, "k": bool(frame.key_frame),
                                  "shape": list(image.shape)}).encode() + b"\n")
            out.write(memoryview(image).cast("B"))
            out.flush()
            for _ in range(units):
                room.release()
        out.flush()
        thread.join()


if __name__ == "__main__":
    try:
        os.nice(WORKER_NICE)
    except (AttributeError, OSError):  # pragma: no cover - no nice on this platform: the same, at equal priority
        pass
    try:
        _serve(sys.stdin.buffer, sys.stdout.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
