"""Follow-up questions reuse the video's KV cache and answer exactly as a full recompute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from core.vlm import GenerationParams, ImagePart, Message, VideoPart, user
from core.vlm.local import LocalEngine

GREEDY = GenerationParams.greedy_defaults


def _video(key: str | None, seed: int = 0) -> VideoPart:
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(8)]
    return VideoPart(frames, [30 * i for i in range(8)], source_fps=30.0, total_frames=240, cache_key=key)


@pytest.fixture
def engine(tiny_model_dir: Path, tmp_path: Path) -> LocalEngine:
    e = LocalEngine(Settings(model=str(tiny_model_dir), cache_dir=tmp_path, prefix_cache_gb=1.0))
    e.load()
    yield e
    e.close()


QUESTIONS = ["What happens at 0:03?", "When does the door close?", "第3分15秒发生了什么"]


def test_follow_ups_equal_full_recompute(engine: LocalEngine) -> None:
    full = [engine.generate([user(_video(None), q)], GREEDY(16)).text for q in QUESTIONS]
    assert len(engine.prefixes) == 0
    reused = []
    for q in QUESTIONS:
        r = engine.generate([user(_video("clip-1"), q)], GREEDY(16))
        reused.append(r)
    assert [r.text for r in reused] == full
    assert engine.prefixes.misses == 1 and engine.prefixes.hits == 2
    assert reused[0].metrics.reused_prefix_tokens == 0
    assert reused[1].metrics.reused_prefix_tokens > reused[1].metrics.visual_tokens > 0
    assert reused[1].prompt_tokens == reused[0].prompt_tokens - len(engine.processor.tokenizer(QUESTIONS[0])["input_ids"]) \
        + len(engine.processor.tokenizer(QUESTIONS[1])["input_ids"])


def test_multi_turn_follow_up_equals_recompute(engine: LocalEngine) -> None:
    def convo(key: str | None) -> list[Message]:
        return [user(_video(key, seed=3), "Describe the video."), Message("assistant", "A door opens."),
                user("And then?")]

    expected = engine.generate(convo(None), GREEDY(12)).text
    engine.generate([user(_video("clip-3", seed=3), "Describe the video.")], GREEDY(4))  # fills the cache
    got = engine.generate(convo("clip-3"), GREEDY(12))
    assert got.metrics.reused_prefix_tokens > 0
    assert got.text == expected


def test_rope_deltas_of_another_video_do_not_leak(engine: LocalEngine) -> None:
    a_full = engine.generate([user(_video(None, seed=5), "What is shown?")], GREEDY(12)).text
    engine.generate([user(_video("a", seed=5), "first")], GREEDY(2))
    # another request with a differently shaped input overwrites the model's shared rope_deltas
    img = np.random.default_rng(9).integers(0, 256, (128, 64, 3), dtype=np.uint8)
    engine.generate([user(ImagePart(img), "other")], GREEDY(2))
    assert engine.generate([user(_video("a", seed=5), "What is shown?")], GREEDY(12)).text == a_full


def test_memory_bound_evicts_least_recently_used(tiny_model_dir: Path, tmp_path: Path) -> None:
    e = LocalEngine(Settings(model=str(tiny_model_dir), cache_dir=tmp_path, prefix_cache_gb=1.0))
    e.load()
    e.generate([user(_video("one", 1), "q")], GREEDY(2))
    one = e.prefixes.nbytes
    assert one > 0
    e.prefixes.limit_bytes = int(one * 2.5)  # room for two
    e.generate([user(_video("two", 2), "q")], GREEDY(2))
    e.generate([user(_video("one", 1), "q")], GREEDY(2))  # touch "one": "two" is now the oldest
    e.generate([user(_video("three", 3), "q")], GREEDY(2))
    assert len(e.prefixes) == 2 and e.prefixes.nbytes <= e.prefixes.limit_bytes
    hits = e.prefixes.hits
    e.generate([user(_video("one", 1), "q")], GREEDY(2))
    assert e.prefixes.hits == hits + 1  # kept
    misses = e.prefixes.misses
    e.generate([user(_video("two", 2), "q")], GREEDY(2))
    assert e.prefixes.misses == misses + 1  # evicted
    e.close()


def test_reuse_off_when_budget_is_zero(tiny_model_dir: Path, tmp_path: Path) -> None:
    e = LocalEngine(Settings(model=str(tiny_model_dir), cache_dir=tmp_path, prefix_cache_gb=0))
    e.load()
    e.generate([user(_video("k"), "q")], GREEDY(2))
    assert len(e.prefixes) == 0
    e.close()
