"""The shape of core/vlm: files small enough to read, VLScope's own switches taken from Settings (not the
environment), and the scheduler's typed requests batched as documented."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

import torch

from core.settings import Settings, SettingsError, load_settings
from core.vlm import GenerationParams, OutOfMemory, user
from core.vlm.local import LocalEngine
from core.vlm.scheduler import Request, RequestStatus, Scheduler

VLM = Path(__file__).resolve().parents[2] / "core" / "vlm"


def test_no_file_in_core_vlm_is_longer_than_400_lines() -> None:
    lengths = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in VLM.glob("*.py")}
    assert {"loading.py", "prefix.py", "runner.py", "scheduler.py", "local.py"} <= set(lengths)
    assert {name: n for name, n in lengths.items() if n > 400} == {}


def test_core_vlm_reads_no_vlscope_variable_from_the_environment() -> None:
    reads = re.compile(r"""(environ(\.get)?\s*[\[(]|getenv\s*\()\s*["']VLSCOPE_""")
    offenders = [f"{p.name}:{i}" for p in VLM.glob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if reads.search(line)]
    assert offenders == []


def test_decode_kernels_and_compile_come_from_the_settings(tiny_model_dir: Path, tmp_path: Path) -> None:
    settings = load_settings(environ={"VLSCOPE_DECODE_KERNELS": "torch", "VLSCOPE_COMPILE_DECODE": "true"},
                             config_file=None)
    assert (settings.decode_kernels, settings.compile_decode, settings.profile_fast_decode) == ("torch", True, False)
    engine = LocalEngine(Settings(model=str(tiny_model_dir), device="cpu", fast_decode="on", cache_dir=tmp_path,
                                  decode_kernels=settings.decode_kernels, compile_decode=settings.compile_decode))
    engine.load()
    try:
        assert engine.info().decoding == ("fast: lean step, PyTorch kernels (VLSCOPE_DECODE_KERNELS=torch), "
                                          "no CUDA graph, torch.compile")
        result = engine.generate([user("hi")], GenerationParams.greedy_defaults(3))
        assert result.metrics.decode_path == "static" and result.completion_tokens >= 1
    finally:
        engine.close()
    with pytest.raises(SettingsError, match="VLSCOPE_DECODE_KERNELS"):
        load_settings(environ={"VLSCOPE_DECODE_KERNELS": "cuda"}, config_file=None)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_profile_fast_decode_times_each_phase_on_cuda(tiny_model_dir: Path, tmp_path: Path) -> None:
    engine = LocalEngine(Settings(model=str(tiny_model_dir), device="cuda", cache_dir=tmp_path,
                                  profile_fast_decode=True))
    engine.load()
    try:
        engine.generate([user("Tell me about the door.")], GenerationParams.greedy_defaults(8))
        phases = engine._fast.last_stats.phases_ms
        assert set(phases) == {"cache", "prefill", "decode"} and all(ms >= 0 for ms in phases.values())
        engine.settings.profile_fast_decode = False
        engine.generate([user("Tell me about the door.")], GenerationParams.greedy_defaults(8))
        assert engine._fast.last_stats.phases_ms is None
    finally:
        engine.close()


def _request(params: GenerationParams, can_batch: bool = True) -> Request:
    class Streamer:
        def end(self) -> None:
            pass

    return Request(params=params, streamer=Streamer(), prompt_length=4, visual_tokens=0, can_batch=can_batch)


def test_the_scheduler_batches_compatible_requests_and_tracks_their_status() -> None:
    groups: list[list[int]] = []
    seen_running: list[bool] = []

    def run(group: list[Request]) -> None:
        groups.append([r.params.max_new_tokens for r in group])
        seen_running.append(all(r.status is RequestStatus.RUNNING for r in group))
        for r in group:
            if r.params.max_new_tokens == 13:
                r.error = OutOfMemory("a test")
            else:
                r.new_ids = [1, 2]

    settings = Settings(max_batch_size=3, batch_window_ms=200)
    scheduler = Scheduler(settings, run)
    greedy = [_request(GenerationParams.greedy_defaults(n)) for n in (10, 11, 12, 14)]
    sampled = _request(GenerationParams(max_new_tokens=13, temperature=1.0))
    for r in [greedy[0], sampled, *greedy[1:]]:
        assert r.status is RequestStatus.QUEUED
        scheduler.submit(r)
    for r in [*greedy, sampled]:
        r.wait()
    assert groups[0] == [10, 11, 12]  # the first three greedy ones, at most max_batch_size, in arrival order
    assert sorted(map(tuple, groups[1:])) == [(13,), (14,)]  # the sampled one never shares a greedy batch
    assert all(seen_running)
    assert [r.status for r in greedy] == [RequestStatus.DONE] * 4 and [r.batch_size for r in greedy] == [3, 3, 3, 1]
    assert sampled.status is RequestStatus.FAILED and "Out of GPU memory" in str(sampled.error)
    assert all(r.started is not None and r.ended is not None and r.ended >= r.started for r in [*greedy, sampled])


def test_a_request_that_cannot_batch_waits_for_the_model_in_the_callers_thread() -> None:
    release = threading.Event()
    order: list[str] = []

    def run(group: list[Request]) -> None:
        order.append(f"run {group[0].params.max_new_tokens}")
        if group[0].params.max_new_tokens == 1:
            release.wait(10)

    scheduler = Scheduler(Settings(max_batch_size=4), run)
    first = _request(GenerationParams.greedy_defaults(1), can_batch=False)
    scheduler.submit(first)
    second = _request(GenerationParams.greedy_defaults(2), can_batch=False)
    waiter = threading.Thread(target=lambda: (scheduler.submit(second), order.append("submitted 2")))
    waiter.start()
    time.sleep(0.3)
    assert order == ["run 1"] and waiter.is_alive()  # submit() blocks while the model is busy
    release.set()
    waiter.join(10)
    second.wait()
    assert order[0] == "run 1" and sorted(order[1:]) == ["run 2", "submitted 2"]
    assert second.status is RequestStatus.DONE and second.started >= first.ended
