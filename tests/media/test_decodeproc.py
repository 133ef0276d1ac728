"""Decoding in worker processes (`core.media.decodeproc`, issue 14): a long video's ingest walks every source frame in
Python; in child processes that loop no longer takes the model's GIL. The frames, frame numbers, key-frame flags and
damage reports are those of the in-process reader; a stretch left mid-way or a worker that dies ends that worker
only, with a message naming the cause, and the next stretch gets a fresh one."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from core.analysis.sources import MediaFrameSource
from core.media.decode import DecodeReport, pyav_select
from core.media.decodeproc import DecoderPool, WorkerFailed, process_select
from core.media.probe import probe_video
from core.media.sampling import SamplingPlan, iter_samples, schedule_frames
from tests.media.conftest import pattern, write_video

FPS = 25


@pytest.fixture(scope="module")
def moving(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 s at 25 fps, key frames every 2 s, a textured picture that shifts a pixel each frame."""
    base = pattern(5, 192, 112)
    return write_video(tmp_path_factory.mktemp("proc") / "moving.mp4", lambda i: np.roll(base, i, axis=1), 400, gop=50)


@pytest.fixture
def pool() -> DecoderPool:
    p = DecoderPool()
    yield p
    p.close()


def _same(a: list, b: list) -> None:
    assert [f.index for f in a] == [f.index for f in b]
    assert [f.key_frame for f in a] == [f.key_frame for f in b]
    assert [round(f.time, 6) for f in a] == [round(f.time, 6) for f in b]
    for x, y in zip(a, b):
        assert x.image.shape == y.image.shape and np.array_equal(x.image, y.image)


@pytest.mark.parametrize("key_frames_only", [False, True])
def test_a_worker_gives_the_frames_the_thread_reader_gives(moving: Path, pool: DecoderPool,
                                                           key_frames_only: bool) -> None:
    targets = list(range(3, 400, 13))
    args = (str(moving), float(FPS), 0.0, 0, targets, (96, 64))
    here = list(pyav_select(*args, key_frames_only=key_frames_only)(threading.Event()))
    apart = list(process_select(pool, *args, key_frames_only=key_frames_only)(threading.Event()))
    assert len(here) == (8 if key_frames_only else 31)  # one per key frame, or one per target
    _same(here, apart)
    assert here[0].image.shape == (64, 96, 3)
    # the worker is kept for the next stretch, which it decodes as well
    assert len(pool) == 1
    again = list(process_select(pool, *args)(threading.Event()))
    assert len(pool) == 1 and len(again) == 31


def test_a_stretch_left_mid_way_ends_its_worker_and_the_next_gets_a_fresh_one(moving: Path,
                                                                              pool: DecoderPool) -> None:
    args = (str(moving), float(FPS), 0.0, 0, list(range(0, 400, 5)), (96, 64))
    frames = process_select(pool, *args)(threading.Event())
    first = [next(frames), next(frames)]
    frames.close()  # its pipe still holds frames: that worker cannot serve another stretch
    assert [f.index for f in first] == [0, 5] and len(pool) == 0
    assert len(list(process_select(pool, *args)(threading.Event()))) == 80


def test_a_worker_that_dies_mid_stretch_is_reported_and_the_frames_before_are_kept(moving: Path,
                                                                                   pool: DecoderPool) -> None:
    info = probe_video(moving)
    schedule = schedule_frames(info, SamplingPlan(fps=5.0, max_frames=80))
    warnings: list[str] = []
    got = []
    for frame in iter_samples(info, schedule, warnings=warnings, processes=pool):
        got.append(frame)
        if len(got) == 3:
            (worker,) = pool._all
            os.kill(worker.proc.pid, signal.SIGKILL)
    assert 3 <= len(got) < 80
    assert any("decoding process ended" in w for w in warnings), warnings
    assert len(pool) == 0


def test_damage_found_in_a_worker_is_reported_as_in_the_thread_reader(damaged_mp4: Path, pool: DecoderPool) -> None:
    targets = list(range(0, 300, 5))
    here, apart = DecodeReport(), DecodeReport()
    a = list(pyav_select(str(damaged_mp4), float(FPS), 0.0, 0, targets, None, report=here)(threading.Event()))
    b = list(process_select(pool, str(damaged_mp4), float(FPS), 0.0, 0, targets, None,
                            report=apart)(threading.Event()))
    assert here.damaged and here.bad_packets > 0
    assert apart.spans == here.spans and apart.bad_packets == here.bad_packets
    _same(a, b)


def test_a_missing_file_is_an_error_the_worker_survives(moving: Path, pool: DecoderPool, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="No such file"):
        list(process_select(pool, str(tmp_path / "gone.mp4"), 25.0, 0.0, 0, [0, 10], None)(threading.Event()))
    assert len(pool) == 1  # it answered: kept for the next stretch
    assert len(list(process_select(pool, str(moving), 25.0, 0.0, 0, [0, 10], None)(threading.Event()))) == 2


def test_an_ingest_reads_the_same_frames_apart_and_decides_by_the_length_walked(moving: Path) -> None:
    plan = SamplingPlan(fps=2.0, max_frames=32)
    threads = MediaFrameSource(moving, plan=plan)
    apart = MediaFrameSource(moving, plan=plan)
    apart.decode_processes = True
    a, b = threads.ingest_input(), apart.ingest_input()
    assert not a.read_apart and b.read_apart  # 400 frames walked: under PROCESS_MIN_WALK, threads by default
    assert a.frame_indices == b.frame_indices
    here = list(a.read(a.frame_indices, None))
    there = list(b.read(b.frame_indices, None))
    assert len(here) == len(a.frame_indices) == 32
    assert [n for n, _ in here] == [n for n, _ in there]
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(here, there))


def test_a_pool_that_cannot_start_a_worker_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError("operation not permitted")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    pool = DecoderPool()
    with pytest.raises(WorkerFailed, match="could not be started: operation not permitted"):
        pool.acquire()
    assert pool.usable() is False  # the ingest then decodes in threads


def test_warm_workers_serve_the_stretches_that_follow(moving: Path, pool: DecoderPool) -> None:
    pool.warm(3)
    assert len(pool) == 3 and len(pool._idle) == 3
    pids = {w.proc.pid for w in pool._idle}
    got = list(process_select(pool, str(moving), 25.0, 0.0, 0, [0, 50, 100], None)(threading.Event()))
    assert [f.index for f in got] == [0, 50, 100]
    assert len(pool) == 3 and {w.proc.pid for w in pool._idle} == pids  # no fourth process started
