"""Concurrent requests decoded as one batch (left padding) give each user the answer they get alone."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from core.vlm import GenerationParams, ImagePart, VideoPart, user
from core.vlm.local import LocalEngine

GREEDY = GenerationParams.greedy_defaults


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path, tmp_path_factory) -> LocalEngine:
    e = LocalEngine(Settings(model=str(tiny_model_dir), fast_decode="on", max_batch_size=4, batch_window_ms=300,
                             cache_dir=tmp_path_factory.mktemp("c")))
    e.load()
    yield e
    e.close()


def _requests() -> list:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    frames = [np.full((64, 64, 3), 20 * i, np.uint8) for i in range(6)]
    return [
        [user("Tell me about the door.")],
        [user(ImagePart(img), "Describe this picture in a few words, please, with colours and shapes.")],
        [user(VideoPart(frames, [0, 10, 20, 30, 40, 50], 25.0), "What happens at 0:01?")],
        [user("hi")],
    ]


def _ask_together(engine: LocalEngine, requests: list, params_list: list) -> list:
    results: list = [None] * len(requests)
    errors: list = []
    start = threading.Barrier(len(requests))

    def ask(i: int) -> None:
        try:
            start.wait()
            results[i] = engine.generate(requests[i], params_list[i])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_batched_answers_equal_one_by_one(engine: LocalEngine) -> None:
    requests = _requests()
    alone = [engine.generate(r, GREEDY(16)) for r in requests]
    assert all(a.metrics.batch_size == 1 for a in alone)
    together = _ask_together(engine, requests, [GREEDY(16)] * 4)
    assert [t.text for t in together] == [a.text for a in alone]
    assert [t.completion_tokens for t in together] == [a.completion_tokens for a in alone]
    assert max(t.metrics.batch_size for t in together) >= 2  # they really shared a batch
    assert engine.ledger.records()[-1].batch_size >= 1


def test_each_request_keeps_its_own_length_limit(engine: LocalEngine) -> None:
    requests = _requests()[:2]
    together = _ask_together(engine, requests, [GREEDY(3), GREEDY(12)])
    assert together[0].completion_tokens <= 3 and together[1].completion_tokens <= 12
    assert together[0].text == engine.generate(requests[0], GREEDY(3)).text


def test_different_sampling_settings_are_not_mixed(engine: LocalEngine) -> None:
    requests = _requests()[:2]
    sampled = GenerationParams(max_new_tokens=8, temperature=1.0, top_p=0.9)
    together = _ask_together(engine, requests, [GREEDY(8), sampled])
    assert together[0].text == engine.generate(requests[0], GREEDY(8)).text
    assert together[0].metrics.batch_size == 1 and together[1].metrics.batch_size == 1
