"""A kept prefix has one copy on the device (issue 14, peak memory): after its first answer on the fast path, the
kept KV cache is the static cache it was decoded in, not a second copy; follow-ups decode in it without copying;
other prompts in between get a cache of their own and never write over it; every answer is the recompute's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.settings import Settings
from core.vlm import GenerationParams, VideoPart, user
from core.vlm.local import LocalEngine

GREEDY = GenerationParams.greedy_defaults


def _video(key: str | None, seed: int) -> VideoPart:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(8)]
    return VideoPart(frames, [30 * i for i in range(8)], source_fps=30.0, total_frames=240, cache_key=key)


def _engine(model: Path, tmp: Path, **kw: object) -> LocalEngine:
    e = LocalEngine(Settings(model=str(model), cache_dir=tmp, fast_decode="on", **kw))
    e.load()
    return e


def _storage(t: object) -> int:
    return t.untyped_storage().data_ptr()  # type: ignore[attr-defined]


def test_a_kept_prefix_is_the_static_cache_and_survives_other_prompts(tiny_model_dir: Path, tmp_path: Path) -> None:
    plain = _engine(tiny_model_dir, tmp_path / "a", prefix_cache_gb=0)
    asks = [(1, "What happens first?"), (1, "And then?"), (None, "Describe a harbour."), (2, "What moves?"),
            (1, "Which colour is it?"), (2, "And at the end?")]
    expected = [plain.generate([user(_video(None, s), q)] if s else [user(q)], GREEDY(10)).text for s, q in asks]
    plain.close()
    engine = _engine(tiny_model_dir, tmp_path / "b", prefix_cache_gb=1.0)
    try:
        got = []
        for k, (seed, q) in enumerate(asks):
            messages = [user(_video(f"clip-{seed}", seed), q)] if seed else [user(q)]
            got.append(engine.generate(messages, GREEDY(10)))
            fast = engine._runner.fast_decoder()
            if k == 0:  # the first answer: the kept prefix now lives in the decoder's static cache, one copy
                kept = engine.prefixes._items[next(iter(engine.prefixes._items))].prefix.kv
                assert _storage(kept.layers[0].keys) == _storage(fast._cache.layers[0].keys)
                first_cache = fast._cache
            if k == 1:  # its follow-up decoded in that same cache: nothing copied
                assert fast._cache is first_cache and got[1].metrics.reused_prefix_tokens > 0
            if k == 2:  # a text prompt gets a cache of its own
                assert fast._cache is not first_cache
        assert [r.text for r in got] == expected
        assert got[4].metrics.reused_prefix_tokens > 0 and got[5].metrics.reused_prefix_tokens > 0
        assert engine.prefixes.hits == 3 and engine.prefixes.misses == 2
    finally:
        engine.close()


def test_measuring_or_moving_a_cache_keeps_no_hidden_reference_to_its_tensors() -> None:
    """`cache_nbytes` (run on every new prefix) once left the cache's tensors in a reference cycle, alive until the
    cycle collector ran: on the GPU the video prefix's KV was then held twice at the first answer's peak."""
    import gc
    import weakref

    import torch
    from transformers import DynamicCache

    from core.vlm.prefix import cache_nbytes, map_cache

    gc.disable()
    try:
        kv = DynamicCache()
        kv.update(torch.zeros(1, 2, 8, 4), torch.zeros(1, 2, 8, 4), 0)
        key = weakref.ref(kv.layers[0].keys)
        assert cache_nbytes(kv) == 2 * 2 * 8 * 4 * 4
        moved = map_cache(kv, lambda t: t.clone())
        kv.layers[0].keys = kv.layers[0].values = None  # what `_load_prefix` does when it re-points a layer
        assert key() is None
        assert moved.layers[0].keys.shape == (1, 2, 8, 4)
    finally:
        gc.enable()
