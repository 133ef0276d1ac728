"""The fast decoding path (static cache; CUDA graph on GPUs) gives the plain path's greedy output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from core.vlm import GenerationParams, ImagePart, Message, VideoPart, user
from core.vlm.local import LocalEngine

GREEDY = GenerationParams.greedy_defaults


@pytest.fixture(scope="module")
def engines(tiny_model_dir: Path, tmp_path_factory):
    plain = LocalEngine(Settings(model=str(tiny_model_dir), device="cpu", fast_decode="off", cache_dir=tmp_path_factory.mktemp("c")))
    fast = LocalEngine(Settings(model=str(tiny_model_dir), device="cpu", fast_decode="on", cache_dir=tmp_path_factory.mktemp("c")))
    plain.load()
    fast.load()
    yield plain, fast
    plain.close()
    fast.close()


def _img(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (96, 64, 3), dtype=np.uint8)


def _video(key: str | None = None) -> VideoPart:
    frames = [np.full((64, 96, 3), 30 * i, dtype=np.uint8) for i in range(6)]
    return VideoPart(frames, [0, 12, 24, 36, 48, 60], source_fps=24.0, cache_key=key)


REQUESTS = {
    "text": [user("Tell me about the door and the car.")],
    "image": [user(ImagePart(_img(1)), "Describe this.")],
    "video": [user(_video(), "What happens at 0:02?")],
    "multi-turn": [user(ImagePart(_img(2)), "What is it?"), Message("assistant", "A square."), user("Colour?")],
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_fast_greedy_equals_plain(engines, name: str) -> None:
    plain, fast = engines
    a = plain.generate(REQUESTS[name], GREEDY(24))
    b = fast.generate(REQUESTS[name], GREEDY(24))
    assert a.metrics.decode_path == "plain" and b.metrics.decode_path == "static"
    assert b.text == a.text
    assert b.completion_tokens == a.completion_tokens


def test_text_after_a_video_does_not_inherit_its_positions(engines) -> None:
    plain, fast = engines
    fast.generate(REQUESTS["video"], GREEDY(4))
    assert fast.generate(REQUESTS["text"], GREEDY(16)).text == plain.generate(REQUESTS["text"], GREEDY(16)).text


def test_fast_with_prefix_reuse_equals_plain(engines) -> None:
    plain, fast = engines
    expected = plain.generate([user(_video(), "When does the door close?")], GREEDY(16)).text
    fast.generate([user(_video("v1"), "first question")], GREEDY(2))
    got = fast.generate([user(_video("v1"), "When does the door close?")], GREEDY(16))
    assert got.metrics.reused_prefix_tokens > 0
    assert got.text == expected


def test_fast_streaming_and_cancel(engines) -> None:
    _, fast = engines
    stream = fast.stream(REQUESTS["text"], GREEDY(30))
    chunks = list(stream)
    assert "".join(chunks) == stream.result.text and len(chunks) > 1
    s = fast.stream([user("long")], GREEDY(3000))
    next(s)
    s.close()
    assert s.result.finish_reason == "cancelled" and s.result.completion_tokens < 3000


def test_fast_sampling_is_seeded_and_penalties_apply(engines) -> None:
    _, fast = engines
    p = GenerationParams(max_new_tokens=20, temperature=1.0, top_p=0.9, top_k=50, seed=3)
    assert fast.generate(REQUESTS["image"], p).text == fast.generate(REQUESTS["image"], p).text
    strict = GenerationParams(max_new_tokens=20, temperature=0.0, presence_penalty=100.0)
    out = fast.generate(REQUESTS["text"], strict)
    ids = fast.processor.tokenizer(out.text, add_special_tokens=False)["input_ids"]
    assert out.completion_tokens >= 2
    plain_ids = fast.processor.tokenizer(fast.generate(REQUESTS["text"], GREEDY(20)).text)["input_ids"]
    assert len(set(ids)) / max(1, len(ids)) >= len(set(plain_ids)) / max(1, len(plain_ids))


def test_the_engine_says_how_it_decodes(engines, monkeypatch) -> None:
    plain, fast = engines
    monkeypatch.delenv("VLSCOPE_DECODE_KERNELS", raising=False)
    monkeypatch.delenv("VLSCOPE_COMPILE_DECODE", raising=False)
    assert plain.info().decoding == "plain generate (VLSCOPE_FAST_DECODE=off)"
    # on the CPU: the lean step with PyTorch operations, no CUDA graph
    assert fast.info().decoding == "fast: lean step, PyTorch kernels (not a CUDA device), no CUDA graph"
