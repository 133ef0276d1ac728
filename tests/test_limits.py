"""The memory-aware bound on heavy work (issue 12, defect 3): fair, one oversized piece runs alone,
and waiting past the timeout is a clear 'busy' refusal, never an out-of-memory kill."""

from __future__ import annotations

import threading
import time


from core.errors import Busy, UserError
from core.limits import GIB, HeavyWork, heavy_work, reset_heavy_work
from core.settings import Settings


def test_work_that_fits_runs_together_and_the_rest_waits() -> None:
    bound = HeavyWork(10 * GIB, timeout_s=5)
    log: list[tuple[str, str, float]] = []

    def piece(name: str, size: float, hold: float) -> None:
        with bound.hold(int(size * GIB), name):
            log.append((name, "start", time.monotonic()))
            time.sleep(hold)
            log.append((name, "end", time.monotonic()))

    a = threading.Thread(target=piece, args=("a", 6, 0.3))
    a.start()
    time.sleep(0.05)
    b = threading.Thread(target=piece, args=("b", 6, 0.05))  # does not fit beside a: waits
    c = threading.Thread(target=piece, args=("c", 1, 0.05))  # would fit, but comes after b: first come, first served
    b.start()
    time.sleep(0.05)
    c.start()
    for t in (a, b, c):
        t.join()
    at = {(n, e): t for n, e, t in log}
    assert at[("b", "start")] >= at[("a", "end")]
    assert at[("c", "start")] >= at[("b", "start")]
    assert bound.stats().held_bytes == 0 and bound.stats().running == 0


def _in_thread(bound: HeavyWork, nbytes: int, what: str, timeout_s: float | None = None) -> BaseException | None:
    """Try a hold from another thread (another request); returns what it raised."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            with bound.hold(nbytes, what, timeout_s=timeout_s):
                pass
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            raised.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return raised[0] if raised else None


def test_one_piece_larger_than_the_budget_runs_alone() -> None:
    bound = HeavyWork(1 * GIB, timeout_s=1)
    with bound.hold(50 * GIB, "a huge page"):
        assert bound.stats().held_bytes == 1 * GIB
        assert isinstance(_in_thread(bound, 1, "anything", timeout_s=0.05), Busy)
    with bound.hold(50 * GIB, "a huge page"):
        pass


def test_busy_message_names_cause_and_fix() -> None:
    bound = HeavyWork(2 * GIB, timeout_s=0.05)
    with bound.hold(2 * GIB, "reading scan.png"):
        exc = _in_thread(bound, 1 * GIB, "reading page.png")
    assert isinstance(exc, Busy) and isinstance(exc, UserError)
    text = str(exc)
    assert text.startswith("The server is busy: reading page.png needs about 1.0 GiB")
    assert "holds 2.0 of the 2.0 GiB" in text and "Try again" in text and "VLSCOPE_HEAVY_WORK_MEMORY_GB" in text
    assert bound.stats().waiting == 0  # the refused request left the queue


def test_shared_bound_follows_settings() -> None:
    reset_heavy_work()
    try:
        bound = heavy_work(Settings(heavy_work_memory_gb=3, busy_timeout_s=7))
        assert bound.capacity == 3 * GIB and bound.timeout_s == 7
        assert heavy_work() is bound
    finally:
        reset_heavy_work()


def test_a_hold_inside_a_hold_of_the_same_thread_costs_nothing_more() -> None:
    bound = HeavyWork(2 * GIB, timeout_s=0.05)
    with bound.hold(2 * GIB, "reading a page"):
        with bound.hold(2 * GIB, "OCR of that page"):  # would wait for itself if counted twice
            assert bound.stats().held_bytes == 2 * GIB and bound.stats().running == 1
        assert bound.stats().held_bytes == 2 * GIB
    assert bound.stats().held_bytes == 0

    other: list[BaseException] = []
    with bound.hold(2 * GIB, "reading a page"):
        def elsewhere() -> None:
            try:
                with bound.hold(1 * GIB, "another request"):
                    pass
            except Busy as exc:
                other.append(exc)
        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()
    assert len(other) == 1  # another thread is still bounded
