"""The disk tier of kept prefixes (core.vlm.prefix_disk): a video's prefix KV cache written by one engine is read
back by the next one (a restart) and gives the same greedy answer without a prefill; a damaged file is a reported
miss, removed and written again; files over the limit go least recently used first."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from core.vlm import GenerationParams, VideoPart, user
from core.vlm.local import LocalEngine

GREEDY = GenerationParams.greedy_defaults


def _video(seed: int) -> VideoPart:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(8)]
    return VideoPart(frames, [30 * i for i in range(8)], source_fps=30.0, total_frames=240, cache_key=f"clip-{seed}")


def _engine(model: Path, cache: Path, **kw: object) -> LocalEngine:
    e = LocalEngine(Settings(model=str(model), cache_dir=cache, **kw))
    e.load()
    assert e.prefixes.disk is not None
    e.prefixes.disk.min_bytes = 0  # the tiny model's prefixes are small; real ones are 64 MiB and more
    return e


def _ask(engine: LocalEngine, seed: int, question: str) -> tuple[str, int]:
    res = engine.generate([user(_video(seed), question)], GREEDY(10))
    return res.text, res.metrics.reused_prefix_tokens


def test_a_restart_reads_the_prefix_back_and_answers_the_same(tiny_model_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    first = _engine(tiny_model_dir, tmp_path)
    text, reused = _ask(first, 1, "What happens first?")
    assert reused == 0
    first.close()  # waits for the write
    files = list((tmp_path / "prefixes").glob("*.kv"))
    assert len(files) == 1 and files[0].stat().st_size > 0

    again = _engine(tiny_model_dir, tmp_path)
    calls: list[int] = []
    real = again._runner._prefill_prefix
    monkeypatch.setattr(again._runner, "_prefill_prefix", lambda *a, **k: calls.append(1) or real(*a, **k))
    try:
        text2, reused2 = _ask(again, 1, "What happens first?")
        assert text2 == text and reused2 > 0 and calls == []  # no prefill: read from disk
        assert again.prefixes.disk_hits == 1
        tiers = {t.tier: t for t in again.prefix_report().tiers}
        assert tiers["disk"].entries == 1 and tiers["disk"].bytes == files[0].stat().st_size
        follow, reused3 = _ask(again, 1, "And then?")  # now in memory: no second read
        assert reused3 > 0 and again.prefixes.disk_hits == 1
    finally:
        again.close()


def test_a_damaged_prefix_file_is_a_reported_miss_and_is_written_again(tiny_model_dir: Path, tmp_path: Path) -> None:
    first = _engine(tiny_model_dir, tmp_path)
    text, _ = _ask(first, 2, "What moves?")
    first.close()
    (path,) = (tmp_path / "prefixes").glob("*.kv")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of one layer's keys changed on disk
    path.write_bytes(bytes(data))

    again = _engine(tiny_model_dir, tmp_path)
    try:
        text2, reused = _ask(again, 2, "What moves?")
        assert text2 == text and reused == 0  # computed again, same answer
        assert any("damaged" in p and "checksum" in p for p in again.prefixes.disk.problems)
        again.prefixes.disk.wait()
        assert path.is_file() and path.read_bytes() != bytes(data)  # written again, whole
    finally:
        again.close()


def test_files_over_the_limit_go_least_recently_used_first(tiny_model_dir: Path, tmp_path: Path) -> None:
    engine = _engine(tiny_model_dir, tmp_path)
    try:
        _ask(engine, 3, "What is it?")
        engine.prefixes.disk.wait()
        (one,) = (tmp_path / "prefixes").glob("*.kv")
        size = one.stat().st_size
        engine.prefixes.disk.limit_bytes = int(size * 1.5)  # room for one file
        os.utime(one, (1, 1))
        _ask(engine, 4, "What is it?")
        engine.prefixes.disk.wait()
        left = list((tmp_path / "prefixes").glob("*.kv"))
        assert len(left) == 1 and left[0] != one
    finally:
        engine.close()


def test_the_disk_tier_is_off_with_no_prefix_reuse_or_a_zero_size(tiny_model_dir: Path, tmp_path: Path) -> None:
    from core.vlm.loading import disk_tier

    assert disk_tier(Settings(model=str(tiny_model_dir), cache_dir=tmp_path, prefix_disk_gb=0)) is None
    assert disk_tier(Settings(model=str(tiny_model_dir), cache_dir=tmp_path, prefix_cache_gb=0)) is None
    tier = disk_tier(Settings(model=str(tiny_model_dir), cache_dir=tmp_path, prefix_disk_gb=2))
    assert tier is not None and tier.limit_bytes == 2 * 1024**3 and tier.folder == tmp_path / "prefixes"


def test_a_write_copies_nothing_while_the_model_runs(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The writer copies the cache off the device only between requests (the engine's model lock): on a GPU a copy
    beside a CUDA graph being captured broke the capture and the write (found on the H200)."""
    import time

    engine = _engine(tiny_model_dir, tmp_path)
    try:
        disk = engine.prefixes.disk
        assert disk.gpu_gate is engine._scheduler.lock
        _ask(engine, 5, "What is it?")
        disk.wait()
        (path,) = (tmp_path / "prefixes").glob("*.kv")
        prefix = disk.load(path.stem, "cpu")
        path.unlink()
        with engine._scheduler.lock:  # the model is busy
            assert disk.save_later(prefix)
            time.sleep(0.5)
            assert not path.exists()
        disk.wait()
        assert path.is_file()
    finally:
        engine.close()


def test_the_checksum_sees_a_flipped_bit_swapped_words_and_a_cut() -> None:
    import torch

    from core.vlm.prefix_disk import SUM_WORDS, sum64

    torch.manual_seed(0)
    t = torch.randn(3, SUM_WORDS // 2 + 7, dtype=torch.bfloat16)  # more than one step of words, and an odd tail
    base = sum64(t)
    assert base == sum64(t.clone()) == sum64(t.t().contiguous().t())  # the bytes, whatever the layout
    raw = t.clone().view(torch.int16)
    for index in (0, 1, SUM_WORDS + 3, raw.numel() - 1):
        for bit in (0, 7, 15):
            flipped = raw.clone().view(-1)
            flipped[index] ^= 1 << bit
            assert sum64(flipped.view(torch.bfloat16)) != base, (index, bit)
    swapped = t.clone().view(-1).view(torch.uint8)
    a, b = swapped[20:24].clone(), swapped[36:40].clone()
    assert not torch.equal(a, b)
    swapped[20:24], swapped[36:40] = b, a  # 32-bit words 5 and 9 change places
    assert sum64(swapped) != base
    assert sum64(t.view(-1)[:-1]) != base
    assert sum64(torch.zeros(4, dtype=torch.uint8)) != sum64(torch.zeros(8, dtype=torch.uint8))


def test_a_file_of_the_older_format_is_a_reported_miss(tiny_model_dir: Path, tmp_path: Path) -> None:
    first = _engine(tiny_model_dir, tmp_path)
    text, _ = _ask(first, 3, "What is it?")
    first.close()
    (path,) = (tmp_path / "prefixes").glob("*.kv")
    data = bytearray(path.read_bytes())
    data[:7] = b"VLSKV1\n"
    path.write_bytes(bytes(data))
    again = _engine(tiny_model_dir, tmp_path)
    try:
        text2, reused = _ask(again, 3, "What is it?")
        assert text2 == text and reused == 0  # computed again
        assert any("older VLScope" in p for p in again.prefixes.disk.problems)
    finally:
        again.close()
