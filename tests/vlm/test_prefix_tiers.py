"""Kept video prefixes in tiers: GPU tier sized from what the weights leave, spilled to host RAM least recently
used first, copied back when asked about; sizes, spill order, exact restores and the GPU page's report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.settings import Settings
from core.vlm import GenerationParams, VideoPart, user
from core.vlm.local import LocalEngine
from core.vlm.prefix import GIB, Prefix, PrefixStore, cache_nbytes, map_cache, plan_prefix_tiers

GREEDY = GenerationParams.greedy_defaults
H200_TOTAL = 143_771 * 1024**2  # what torch.cuda.mem_get_info reports on an H200
KV_PER_TOKEN_4B = 2 * 36 * 8 * 128 * 2  # 144 KiB
TEN_MINUTE_PREFIX = 46_080 * KV_PER_TOKEN_4B  # 6.8 GB: the default plan of a 10-minute video on the 4B


def _settings(**kw: Any) -> Settings:
    return Settings(model="Qwen/Qwen3-VL-4B-Instruct", **kw)


# -- sizes -------------------------------------------------------------------------------------------------------

def test_24gb_card_with_8gb_of_weights() -> None:
    total, weights = 24 * GIB, 8 * GIB
    free = total - weights - GIB // 2  # the CUDA context
    plan = plan_prefix_tiers(free, total, weights, 60 * GIB, _settings())
    reserve = max(4 * GIB, int(0.2 * total))  # 4.8 GiB
    assert plan.gpu_limit == free - reserve and round(plan.gpu_limit / GIB, 1) == 10.7
    assert plan.host_limit == 30 * GIB - 4 * GIB
    assert "15.5 GiB free after 8.0 GiB of weights, minus a 4.8 GiB working reserve" in plan.reason
    assert "host tier 26.0 GiB of pinned RAM (half of the 60.0 GiB of RAM available, minus 4.0 GiB)" in plan.reason


def test_h200_keeps_ten_minute_prefixes_that_the_old_4gb_setting_dropped() -> None:
    weights = int(4.438e9 * 2)  # the 4B in bf16
    free = H200_TOTAL - weights - int(0.6 * GIB)
    plan = plan_prefix_tiers(free, H200_TOTAL, weights, 120 * GIB, _settings())
    assert plan.gpu_limit == free - int(0.2 * H200_TOTAL)
    assert round(plan.gpu_limit / GIB, 1) == 103.5
    assert plan.gpu_limit // TEN_MINUTE_PREFIX == 16  # on the GPU, where 4 GB kept none
    assert plan.host_limit == 56 * GIB and plan.host_limit // TEN_MINUTE_PREFIX == 8  # and 8 more spilled


def test_cpu_only_engine_has_one_tier_in_ram() -> None:
    weights = int(2.128e9 * 4)  # the 2B in fp32, in the 24 GiB of RAM
    available = 24 * GIB - weights - 2 * GIB
    plan = plan_prefix_tiers(None, None, weights, available, _settings())
    assert plan.host_limit == 0
    assert plan.gpu_limit == available // 2 - 4 * GIB and round(plan.gpu_limit / GIB, 1) == 3.0
    assert plan.reason.startswith("One tier in RAM (CPU engine): 3.0 GiB (half of the 14.1 GiB of RAM available")
    assert plan.reason.endswith("no host tier.")
    # a small machine keeps nothing rather than a negative size
    assert plan_prefix_tiers(None, None, weights, 6 * GIB, _settings()).gpu_limit == 0


def test_explicit_settings_override_the_automatic_sizes() -> None:
    weights = 9 * GIB
    free = H200_TOTAL - weights
    plan = plan_prefix_tiers(free, H200_TOTAL, weights, 120 * GIB, _settings(prefix_gpu_gb=40, prefix_host_gb=0))
    assert (plan.gpu_limit, plan.host_limit) == (40 * GIB, 0)
    assert "GPU tier 40.0 GiB (setting prefix_gpu_gb)" in plan.reason and "(setting prefix_host_gb)" in plan.reason
    # more than the automatic size: kept as asked, with the risk said
    big = plan_prefix_tiers(free, H200_TOTAL, weights, 120 * GIB, _settings(prefix_gpu_gb=120))
    assert big.gpu_limit == 120 * GIB and "large requests may run out of memory" in big.reason
    # prefix_cache_gb caps both tiers together (a value set for the old one-tier store keeps meaning it)
    capped = plan_prefix_tiers(free, H200_TOTAL, weights, 120 * GIB, _settings(prefix_cache_gb=40))
    assert (capped.gpu_limit, capped.host_limit) == (40 * GIB, 0)
    assert capped.reason.endswith("both capped at prefix_cache_gb = 40.0 GiB together.")
    cpu = plan_prefix_tiers(None, None, weights, 64 * GIB, _settings(prefix_gpu_gb=3))
    assert (cpu.gpu_limit, cpu.host_limit) == (3 * GIB, 0)
    off = plan_prefix_tiers(free, H200_TOTAL, weights, 120 * GIB, _settings(prefix_cache_gb=0))
    assert (off.gpu_limit, off.host_limit) == (0, 0) and "off" in off.reason
    # weights that fill the card leave no GPU tier, not a negative one
    assert plan_prefix_tiers(GIB, 24 * GIB, 23 * GIB, 8 * GIB, _settings()).gpu_limit == 0


# -- the store ---------------------------------------------------------------------------------------------------

class CpuHost:
    """A "host" tier on this CPU-only machine: copies of every tensor, counted."""

    def __init__(self) -> None:
        self.spilled = 0
        self.restored = 0

    def to_host(self, kv: Any) -> Any:
        self.spilled += 1
        return map_cache(kv, lambda t: t.clone())

    def to_device(self, kv: Any) -> Any:
        self.restored += 1
        return map_cache(kv, lambda t: t.clone())


def _cache(seed: int, tokens: int = 16, layers: int = 2) -> Any:
    from transformers import DynamicCache

    g = torch.Generator().manual_seed(seed)
    kv = DynamicCache()
    for i in range(layers):
        kv.update(torch.randn(1, 2, tokens, 8, generator=g), torch.randn(1, 2, tokens, 8, generator=g), i)
    return kv


def _prefix(key: str, kv: Any) -> Prefix:
    ids = torch.arange(4).view(1, 4)
    return Prefix(key=key, input_ids=ids, mm_token_type_ids=None, grids={}, kv=kv, rope_deltas=None,
                  nbytes=cache_nbytes(kv), cache_kwarg="past_key_values")


def _where(store: PrefixStore, keys: str) -> dict[str, str | None]:
    return {k: store.tier_of(k) for k in keys}


def test_least_recently_used_spill_to_host_then_out() -> None:
    size = cache_nbytes(_cache(0))
    host = CpuHost()
    store = PrefixStore(2 * size, 2 * size, to_host=host.to_host, to_device=host.to_device)
    for k in "ABC":
        store.put(_prefix(k, _cache(ord(k))))
    assert _where(store, "ABC") == {"A": "host", "B": "device", "C": "device"}
    assert store.get("A") is not None  # used again: back on the device, B (least recent there) spills
    assert _where(store, "ABC") == {"A": "device", "B": "host", "C": "device"}
    store.put(_prefix("D", _cache(4)))  # C is the least recently used on the device now
    assert _where(store, "ABCD") == {"A": "device", "B": "host", "C": "host", "D": "device"}
    store.put(_prefix("E", _cache(5)))  # A spills; the host tier is over: B, the least recently used, goes
    assert _where(store, "ABCDE") == {"A": "host", "B": None, "C": "host", "D": "device", "E": "device"}
    assert (host.spilled, host.restored) == (4, 1)
    report = store.report()
    assert [(t.tier, t.entries, t.bytes, t.limit_bytes) for t in report.tiers] == [
        ("GPU", 2, 2 * size, 2 * size), ("host RAM (pinned)", 2, 2 * size, 2 * size)]
    assert (report.hits, report.misses, report.note) == (1, 0, "")
    assert store.get("B") is None and store.report().misses == 1


def test_restored_prefix_has_exactly_the_same_tensors() -> None:
    kv = _cache(7, tokens=33, layers=3)
    kv.layers[1].keys = kv.layers[1].keys.to(torch.bfloat16)  # any dtype survives as it is
    original = [(layer.keys.clone(), layer.values.clone()) for layer in kv.layers]
    host = CpuHost()
    other = _cache(8, tokens=33, layers=3)
    store = PrefixStore(cache_nbytes(other), 10 * cache_nbytes(kv), to_host=host.to_host, to_device=host.to_device)
    store.put(_prefix("video", kv))
    store.put(_prefix("other", other))  # pushes "video" to the host
    assert store.tier_of("video") == "host"
    back = store.get("video")
    assert back is not None and store.tier_of("video") == "device" and host.restored == 1
    assert type(back.kv) is type(kv) and back.kv is not kv and back.kv.get_seq_length() == 33
    for (k, v), layer in zip(original, back.kv.layers):
        assert layer.keys is not k and torch.equal(layer.keys, k) and layer.keys.dtype == k.dtype
        assert torch.equal(layer.values, v)
    assert [torch.equal(a.keys, k) for a, (k, _) in zip(kv.layers, original)] == [True] * 3  # source untouched


def test_prefix_larger_than_both_tiers_is_not_kept_and_says_why() -> None:
    kv = _cache(1, tokens=64)
    host = CpuHost()
    store = PrefixStore(1024, 2048, to_host=host.to_host, to_device=host.to_device)
    store.put(_prefix("huge", kv))
    assert len(store) == 0 and host.spilled == 0
    note = store.report().note
    assert note == ("A prefix of 16.0 KiB was not kept: it is larger than the GPU tier (1.0 KiB) and the host tier "
                    "(2.0 KiB). Raise prefix_gpu_gb or prefix_host_gb, or ask with fewer frames or pixels.")
    # larger than the GPU tier but not the host one: straight to the host, a device copy when asked about
    roomy = PrefixStore(1024, 10 * cache_nbytes(kv), to_host=host.to_host, to_device=host.to_device)
    roomy.put(_prefix("big", kv))
    assert roomy.tier_of("big") == "host" and roomy.report().note == ""
    got = roomy.get("big")
    assert got is not None and torch.equal(got.kv.layers[0].keys, kv.layers[0].keys) and roomy.tier_of("big") == "host"


def test_a_failed_copy_back_is_a_miss_and_the_prefix_stays_on_the_host() -> None:
    host = CpuHost()
    failing = {"left": 1}

    def to_device(kv: Any) -> Any:
        if failing["left"]:
            failing["left"] -= 1
            raise RuntimeError("CUDA out of memory. Tried to allocate 6.33 GiB")
        return host.to_device(kv)

    size = cache_nbytes(_cache(0))
    store = PrefixStore(size, 4 * size, to_host=host.to_host, to_device=to_device)
    store.put(_prefix("A", _cache(0)))
    store.put(_prefix("B", _cache(1)))
    assert store.get("A") is None and (store.hits, store.misses) == (0, 1)  # the runner computes it again
    assert _where(store, "AB") == {"A": "host", "B": "host"}  # B made room first; both still kept
    got = store.get("A")
    assert got is not None and torch.equal(got.kv.layers[0].keys, _cache(0).layers[0].keys)
    assert _where(store, "AB") == {"A": "device", "B": "host"} and store.hits == 1


def test_cpu_store_has_no_host_tier() -> None:
    store = PrefixStore.for_device("cpu", plan_prefix_tiers(None, None, GIB, 16 * GIB, _settings()))
    size = cache_nbytes(_cache(0))
    store.limit_bytes = size
    store.put(_prefix("A", _cache(0)))
    store.put(_prefix("B", _cache(1)))  # no host tier: A is dropped
    assert _where(store, "AB") == {"A": None, "B": "device"}
    assert [t.tier for t in store.report().tiers] == ["RAM"]


# -- with the tiny model -----------------------------------------------------------------------------------------

def _video(key: str | None, seed: int) -> VideoPart:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(8)]
    return VideoPart(frames, [30 * i for i in range(8)], source_fps=30.0, total_frames=240, cache_key=key)


def _engine(tiny_model_dir: Path, tmp_path: Path, **kw: Any) -> LocalEngine:
    engine = LocalEngine(Settings(model=str(tiny_model_dir), cache_dir=tmp_path, **kw))
    engine.load()
    return engine


@pytest.mark.parametrize("fast_decode", ["off", "on"])
def test_spilled_prefix_gives_the_same_follow_up_answer(tiny_model_dir: Path, tmp_path: Path,
                                                        fast_decode: str) -> None:
    engine = _engine(tiny_model_dir, tmp_path, fast_decode=fast_decode)
    try:
        first, follow = "Describe the video.", "When does the door close?"
        recomputed = engine.generate([user(_video(None, 1), follow)], GREEDY(12)).text
        engine.generate([user(_video("clip-a", 1), first)], GREEDY(2))
        stayed = engine.generate([user(_video("clip-a", 1), follow)], GREEDY(12))
        assert stayed.metrics.reused_prefix_tokens > 0 and stayed.text == recomputed
        size = engine.prefixes.nbytes

        host = CpuHost()  # the "GPU" tier holds one prefix; the other spills to the second CPU tier
        store = PrefixStore(size, 4 * size, to_host=host.to_host, to_device=host.to_device)
        engine.prefixes = engine.runner.prefixes = store
        engine.generate([user(_video("clip-a", 1), first)], GREEDY(2))
        engine.generate([user(_video("clip-b", 2), first)], GREEDY(2))
        assert host.spilled == 1 and [t.entries for t in store.report().tiers] == [1, 1]
        back = engine.generate([user(_video("clip-a", 1), follow)], GREEDY(12))
        assert host.restored == 1 and back.metrics.reused_prefix_tokens == stayed.metrics.reused_prefix_tokens
        assert back.text == stayed.text == recomputed
        report = engine.info().prefixes
        assert report is not None and (report.hits, report.misses) == (1, 2)
        assert [(t.entries, t.bytes) for t in report.tiers] == [(1, size), (1, size)]
    finally:
        engine.close()


def test_engine_sizes_its_one_ram_tier_and_refuses_a_prefix_too_large(tiny_model_dir: Path, tmp_path: Path) -> None:
    small = LocalEngine(Settings(model=str(tiny_model_dir), cache_dir=tmp_path, prefix_gpu_gb=1e-6, prefix_disk_gb=0))
    assert small.info().prefixes is None  # sized when the model loads
    small.load()
    try:
        report = small.info().prefixes
        assert report is not None and [(t.tier, t.limit_bytes) for t in report.tiers] == [("RAM", 1073)]
        assert report.reason.startswith("One tier in RAM (CPU engine): 0.0 GiB (setting prefix_gpu_gb)")
        small.generate([user(_video("clip-a", 1), "What happens?")], GREEDY(2))
        report = small.info().prefixes
        assert len(small.prefixes) == 0 and report.tiers[0].entries == 0
        assert report.note.endswith("was not kept: it is larger than the RAM tier (1.0 KiB). Raise prefix_gpu_gb, "
                                    "or ask with fewer frames or pixels.")
    finally:
        small.close()
    auto = _engine(tiny_model_dir, tmp_path)
    try:
        report = auto.info().prefixes
        available = float(re.search(r"half of the ([\d.]+) GiB of RAM available", report.reason).group(1))
        assert report.tiers[0].limit_bytes / GIB == pytest.approx(max(0.0, available / 2 - 4), abs=0.05)
    finally:
        auto.close()


# -- the GPU page ------------------------------------------------------------------------------------------------

def test_gpu_page_shows_the_kept_prefixes(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    import streamlit as st

    root = Path(__file__).parents[2]
    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VLSCOPE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("VLSCOPE_PREFIX_GPU_GB", "0.5")
    monkeypatch.setenv("VLSCOPE_PREFIX_DISK_GB", "2")
    monkeypatch.chdir(root)
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(root / "pages" / "gpu_monitor.py"), default_timeout=60).run()
        assert not at.exception, at.exception
        assert "Kept video prefixes" in [s.value for s in at.subheader]
        assert any(c.value.startswith("Nothing kept yet: the tiers are sized") for c in at.caption)
        assert not at.dataframe

        from ui.state import get_engine

        engine = get_engine()
        engine.generate([user(_video("clip-a", 1), "Describe the video.")], GREEDY(2))
        engine.generate([user(_video("clip-a", 1), "And then?")], GREEDY(2))
        at.run()
        assert not at.exception, at.exception
        table = next(d.value for d in at.dataframe if list(d.value.columns) == ["Tier", "Entries", "Kept", "Limit"])
        kept_kib = engine.prefixes.nbytes / 1024
        assert 1 < kept_kib < 1024  # the tiny model's prefix
        assert table.to_dict("records")[0] == {"Tier": "RAM", "Entries": 1, "Kept": f"{kept_kib:.1f} KiB",
                                               "Limit": "512.0 MiB"}
        # the disk tier (what a restart finds): the tiny model's prefix is below its 64 MiB floor, so not written
        assert table.to_dict("records")[1] == {"Tier": "disk", "Entries": 0, "Kept": "0.0 KiB", "Limit": "2.00 GiB"}
        caption = next(c.value for c in at.caption if "follow-up" in c.value)
        assert caption.startswith("1 follow-up(s) reused a kept prefix, 1 computed one.")
        assert "One tier in RAM (CPU engine)" in caption and "setting prefix\\_gpu\\_gb" in caption
    finally:
        st.cache_resource.clear()


def test_release_device_spills_every_gpu_entry_to_the_host_tier() -> None:
    """Before a prefill that ran out of memory is tried again, the GPU tier is emptied into the host tier."""
    import torch

    from core.vlm.prefix import Prefix, PrefixStore

    moved: list[int] = []

    def to_host(kv):
        moved.append(1)
        return kv

    store = PrefixStore(10**9, 10**9, to_host=to_host, to_device=lambda kv: kv)
    for key in ("a", "b"):
        store.put(Prefix(key=key, input_ids=None, mm_token_type_ids=None, grids={}, kv=[torch.zeros(1024)],
                         rope_deltas=None, nbytes=4096, cache_kwarg="past_key_values"))
    assert store.tier_of("a") == "device" and store.tier_of("b") == "device"
    assert store.release_device() == 2
    assert store.tier_of("a") == "host" and store.tier_of("b") == "host" and len(moved) == 2
    assert store.release_device() == 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_on_cuda_a_spilled_prefix_goes_to_pinned_ram_and_comes_back_exact() -> None:
    from transformers import DynamicCache

    from core.vlm.prefix import Prefix, PrefixStore, TierPlan, cache_nbytes

    def prefix(key: str, seed: int) -> Prefix:
        gen = torch.Generator(device="cuda").manual_seed(seed)
        kv = DynamicCache()
        for layer in range(2):
            k = torch.randn(1, 8, 512, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
            kv.update(k, k * 2, layer)
        return Prefix(key=key, input_ids=None, mm_token_type_ids=None, grids={}, kv=kv, rope_deltas=None,
                      nbytes=cache_nbytes(kv), cache_kwarg="past_key_values")

    first = prefix("a", 1)
    want = [t.clone() for t in (first.kv.layers[0].keys, first.kv.layers[1].values)]
    store = PrefixStore.for_device("cuda", TierPlan(first.nbytes + 1, 4 * first.nbytes, "test"))
    store.put(first)
    store.put(prefix("b", 2))  # the GPU tier holds one: "a" spills to pinned RAM
    assert store.tier_of("a") == "host" and store.tier_of("b") == "device"
    back = store.get("a")
    assert back is not None and back.kv.layers[0].keys.device.type == "cuda"
    assert torch.equal(back.kv.layers[0].keys, want[0]) and torch.equal(back.kv.layers[1].values, want[1])
    assert store.release_device() >= 1 and store.tier_of("b") == "host"
