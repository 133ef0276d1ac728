"""Low-level decoding with a watchdog: frame readers that stream (bounded memory) and stop cleanly
when a decode hangs, fails mid-file or is cancelled, returning what was decoded with a warning.
Packets the decoder rejects (damaged data) are skipped, as ffmpeg does, and the seconds they cover
are recorded in a `DecodeReport`, so one bad packet costs its own seconds, not the rest of the file.

Readers yield `DecodedFrame`s. Fast paths (measured, see benchmarks/sampling.py): frames that are
not kept are never converted; key-frame-only decoding (`skip_frame="NONKEY"`) when samples are
further apart than key frames; OpenCV grab()/retrieve() for dense constant-frame-rate decoding.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from core.media.avopen import open_input
from core.media.errors import Cancelled, VideoError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class DecodedFrame:
    """One decoded frame: its source frame number, time in seconds and pixels (format set by the reader)."""

    index: int
    time: float
    image: np.ndarray
    key_frame: bool = False


@dataclass
class DecodeReport:
    """What one decode could not read: `spans` of seconds lost to damaged data (their packets skipped),
    and whether the watchdog stopped it early (`stopped_early`: a stall or time limit, worth retrying;
    damage is not: the same file gives the same result). `readable_end`: spans from there on are a
    truncation already reported by the probe, and are left out.
    """

    spans: list[tuple[float, float]] = field(default_factory=list)
    bad_packets: int = 0
    stopped_early: bool = False
    readable_end: float | None = None

    @property
    def damaged(self) -> bool:
        """True when some seconds could not be read."""
        return bool(self.spans)

    def add_span(self, start: float, end: float) -> None:
        """Record [start, end) as unreadable (merged with the previous span when they touch)."""
        if self.readable_end is not None:
            if start >= self.readable_end:
                return
            end = min(end, self.readable_end)
        start, end = max(0.0, start), max(start, end)
        if self.spans and start <= self.spans[-1][1] + 0.05:
            self.spans[-1] = (self.spans[-1][0], max(end, self.spans[-1][1]))
        else:
            self.spans.append((start, end))

    def cut_at(self, end: float) -> None:
        """Forget what lies from `end` on (the file turned out to end there)."""
        self.readable_end = end
        self.spans = [(a, min(b, end)) for a, b in self.spans if a < end - 1e-6]

    def warning(self) -> str | None:
        """The message naming the seconds that could not be read, or None when everything was read."""
        if not self.spans:
            return None
        shown = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in self.spans[:8])
        more = f" and {len(self.spans) - 8} more stretches" if len(self.spans) > 8 else ""
        lost = sum(b - a for a, b in self.spans)
        return (f"{lost:.1f} s of the video could not be read at {shown}{more} (damaged data: {self.bad_packets} "
                "packet(s) skipped); the rest was analysed. Copy the file again or re-export it to fill the gap.")


def decode_skipping(container: Any, stream: Any, report: DecodeReport, fps: float, start_time: float = 0.0,
                    max_bad_at_start: int = 100) -> Iterator[Any]:
    """The frames of `stream`, skipping packets the decoder rejects and recording the seconds they cost in `report`.

    A lost span runs from the end of the last frame before the error to the first frame after it (exact
    with threaded decoding too, whose errors surface a few packets late). Raises the decoder's error when
    the first `max_bad_at_start` packets all fail (nothing decodable: a codec problem, not damage).
    """
    import av

    step = 1.0 / fps if fps > 0 else 0.04
    prev_end: float | None = None  # end of the last frame given, seconds from the start
    pending: float | None = None  # time of the first rejected packet since that frame
    last_bad: float | None = None
    got_any = False
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except (av.error.InvalidDataError, av.error.UndefinedError, av.error.PatchWelcomeError,
                av.error.BugError) as exc:
            report.bad_packets += 1
            t = float(packet.pts * packet.time_base) - start_time if packet.pts is not None and packet.time_base else None
            if t is not None:
                last_bad = t if last_bad is None else max(last_bad, t)
            if pending is None:
                pending = t if t is not None else (prev_end or 0.0)
            if not got_any and report.bad_packets >= max_bad_at_start:
                raise exc
            log.debug("skipped a damaged packet at %s s: %s", t, exc)
            continue
        for frame in frames:
            got_any = True
            t = float(frame.time) - start_time if frame.time is not None else (prev_end or 0.0)
            if pending is not None:
                lo = prev_end if prev_end is not None else min(pending, t)
                if t - lo > 0.5 * step:
                    report.add_span(lo, t)
                pending = None
            prev_end = t + step
            yield frame
    if pending is not None:
        lo = prev_end if prev_end is not None else pending
        report.add_span(lo, max(lo, (last_bad if last_bad is not None else lo) + step))


def run_with_watchdog(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """fn() run in a worker thread; its result, its exception, or VideoError when it takes over `timeout_s`."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    worker = threading.Thread(target=work, name="vlscope-decode-once", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise VideoError(f"{what} took longer than {timeout_s:.0f} s and was stopped; the file may be damaged. "
                         "Re-export it as mp4 (H.264).")
    if "error" in box:
        raise box["error"]
    return box["value"]


class Watched:
    """Iterates a producer generator in a worker thread with a bounded queue and a watchdog.

    Stops (with a message in `warnings`) when no item arrives for `stall_s` seconds, when the whole
    run exceeds `total_s`, or when the producer raises mid-file; raises Cancelled when `cancel` is set.
    """

    _DONE = object()

    def __init__(self, producer: Callable[[threading.Event], Iterator[T]], stall_s: float = 60.0,
                 total_s: float | None = None, cancel: threading.Event | None = None, queue_size: int = 8,
                 what: str = "decoding") -> None:
        self.producer = producer
        self.stall_s = stall_s
        self.total_s = total_s
        self.cancel = cancel
        self.what = what
        self.warnings: list[str] = []
        self.stopped_early = False
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()

    def _run(self) -> None:
        try:
            for item in self.producer(self._stop):
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put_final(exc)
            return
        self._put_final(self._DONE)

    def _put_final(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Any]:
        worker = threading.Thread(target=self._run, name="vlscope-decode", daemon=True)
        worker.start()
        started = time.monotonic()
        try:
            while True:
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled(f"{self.what} was cancelled")
                wait = 0.25
                deadline = time.monotonic() + self.stall_s
                item: Any = None
                got = False
                while time.monotonic() < deadline:
                    try:
                        item = self._queue.get(timeout=wait)
                        got = True
                        break
                    except queue.Empty:
                        if self.cancel is not None and self.cancel.is_set():
                            raise Cancelled(f"{self.what} was cancelled") from None
                        if self.total_s is not None and time.monotonic() - started > self.total_s:
                            break
                if not got:
                    limit = "its time limit" if (self.total_s is not None and time.monotonic() - started
                                                 > self.total_s) else f"{self.stall_s:.0f} s without a frame"
                    self._warn(f"{self.what} stopped after {limit}; kept what was decoded (the file may be damaged)")
                    return
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, (Cancelled, VideoError)):
                        raise item
                    self._warn(f"{self.what} stopped at a decoding error ({str(item).strip()[:160] or type(item).__name__}); "
                               "kept what was decoded before it (the file may be truncated or damaged)")
                    return
                yield item
                if self.total_s is not None and time.monotonic() - started > self.total_s:
                    self._warn(f"{self.what} stopped at its time limit of {self.total_s:.0f} s; kept what was decoded")
                    return
        finally:
            self._stop.set()

    def _warn(self, message: str) -> None:
        self.stopped_early = True
        self.warnings.append(message)
        log.warning(message)


def rotate_image(image: np.ndarray, rotation: int) -> np.ndarray:
    """`image` turned to its display orientation given the stream's rotation (0/90/180/270)."""
    if rotation == 90:
        return np.ascontiguousarray(np.rot90(image, k=1))
    if rotation == 180:
        return np.ascontiguousarray(image[::-1, ::-1])
    if rotation == 270:
        return np.ascontiguousarray(np.rot90(image, k=3))
    return image


def _coded_size(size: tuple[int, int] | None, rotation: int) -> tuple[int | None, int | None]:
    """(width, height) to ask the scaler for, in coded orientation, from a displayed (width, height)."""
    if size is None:
        return None, None
    w, h = size
    return (h, w) if rotation in (90, 270) else (w, h)


def _frame_index(frame: Any, fps: float, start: float, counter: int) -> tuple[int, float]:
    t = frame.time
    if t is None:
        return counter, counter / fps
    t = float(t) - start
    return max(0, int(round(t * fps))), t


def pyav_select(path: str, fps: float, start_time: float, rotation: int, targets: list[int],
                size: tuple[int, int] | None, fmt: str = "rgb24", key_frames_only: bool = False,
                from_time: float | None = None, report: DecodeReport | None = None
                ) -> Callable[[threading.Event], Iterator[DecodedFrame]]:
    """A producer decoding with PyAV and yielding, for each target frame number, the first frame at or after it.

    With `key_frames_only`, only key frames are decoded and each target gets the nearest key frame
    (no key frame is used twice). Frames not kept are never converted. `size` is the displayed
    (width, height) to scale to, None for the source size. Damaged packets are skipped into `report`.
    """
    report = report if report is not None else DecodeReport()

    def produce(stop: threading.Event) -> Iterator[DecodedFrame]:
        container = open_input(path, timeout=30)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if key_frames_only:
                stream.codec_context.skip_frame = "NONKEY"
            if from_time and from_time > 1.0:
                container.seek(int((from_time + start_time - 1.0) / stream.time_base), stream=stream, backward=True)
            w, h = _coded_size(size, rotation)

            def convert(frame: Any) -> np.ndarray:
                return rotate_image(frame.to_ndarray(format=fmt, width=w, height=h), rotation)

            if not targets:
                return
            ti = 0
            counter = 0
            if not key_frames_only:
                for frame in decode_skipping(container, stream, report, fps, start_time):
                    if stop.is_set():
                        return
                    idx, t = _frame_index(frame, fps, start_time, counter)
                    counter += 1
                    if idx < targets[ti]:
                        continue
                    yield DecodedFrame(idx, idx / fps, convert(frame), bool(frame.key_frame))
                    while ti < len(targets) and targets[ti] <= idx:
                        ti += 1
                    if ti >= len(targets):
                        return
                return
            prev: tuple[Any, int] | None = None
            prev_used = False
            for frame in decode_skipping(container, stream, report, fps, start_time):
                if stop.is_set():
                    return
                idx, _ = _frame_index(frame, fps, start_time, counter)
                counter += 1
                cur_used = False
                while ti < len(targets) and targets[ti] <= idx:
                    target = targets[ti]
                    if prev is not None and not prev_used and target - prev[1] <= idx - target:
                        yield DecodedFrame(prev[1], prev[1] / fps, convert(prev[0]), True)
                        prev_used = True
                    elif not cur_used:
                        yield DecodedFrame(idx, idx / fps, convert(frame), True)
                        cur_used = True
                    ti += 1
                if ti >= len(targets):
                    return
                prev, prev_used = (frame, idx), cur_used
            if ti < len(targets) and prev is not None and not prev_used:
                yield DecodedFrame(prev[1], prev[1] / fps, convert(prev[0]), True)
        finally:
            container.close()

    return produce


def opencv_select(path: str, fps: float, targets: list[int], size: tuple[int, int] | None, rotation: int = 0,
                  report: DecodeReport | None = None) -> Callable[[threading.Event], Iterator[DecodedFrame]]:
    """A producer using OpenCV grab() on every frame and retrieve() only on target frames (RGB, display orientation).

    For constant-frame-rate files: the frame number is the count of frames grabbed. OpenCV stops at
    the first damaged packet; the targets left then go to PyAV, which skips damaged packets.
    """

    def produce(stop: threading.Event) -> Iterator[DecodedFrame]:
        import cv2

        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise VideoError(f"OpenCV could not open {path}")
        try:
            cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
            if not targets:
                return
            ti = 0
            idx = 0
            if targets[0] > 0:
                # skip ahead cheaply only when far (seeking in OpenCV is slow and inexact near the start)
                pass
            while ti < len(targets):
                if stop.is_set():
                    return
                if not cap.grab():
                    break
                if idx == targets[ti]:
                    ok, bgr = cap.retrieve()
                    if not ok:
                        break
                    if size is not None and (bgr.shape[1], bgr.shape[0]) != tuple(size):
                        bgr = cv2.resize(bgr, tuple(size), interpolation=cv2.INTER_AREA)
                    yield DecodedFrame(idx, idx / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                    while ti < len(targets) and targets[ti] <= idx:
                        ti += 1
                idx += 1
        finally:
            cap.release()
        if ti < len(targets) and not stop.is_set():
            log.info("OpenCV stopped at frame %d of %s; PyAV reads the rest", idx, path)
            rest = targets[ti:]
            yield from pyav_select(path, fps, 0.0, rotation, rest, size, from_time=rest[0] / fps, report=report)(stop)

    return produce


def pyav_all_gray(path: str, fps: float, start_time: float, rotation: int, size: tuple[int, int],
                  step: int = 1, report: DecodeReport | None = None) -> Callable[[threading.Event], Iterator[DecodedFrame]]:
    """A producer yielding every `step`-th frame as a small greyscale image of displayed `size` (width, height).

    Damaged packets are skipped into `report`.
    """
    report = report if report is not None else DecodeReport()

    def produce(stop: threading.Event) -> Iterator[DecodedFrame]:
        container = open_input(path, timeout=30)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            w, h = _coded_size(size, rotation)
            counter = 0
            for frame in decode_skipping(container, stream, report, fps, start_time):
                if stop.is_set():
                    return
                idx, t = _frame_index(frame, fps, start_time, counter)
                counter += 1
                if step > 1 and (counter - 1) % step:
                    continue
                img = rotate_image(frame.to_ndarray(format="gray", width=w, height=h), rotation)
                yield DecodedFrame(idx, t, img, bool(frame.key_frame))
        finally:
            container.close()

    return produce
