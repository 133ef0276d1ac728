"""The local engine on a tiny random-weight Qwen3-VL, loaded through the same path as a real model."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from core.vlm import (
    GenerationParams,
    ImagePart,
    InvalidRequest,
    Message,
    ModelUnavailable,
    OutOfMemory,
    TextPart,
    VideoPart,
    user,
)
from core.vlm.local import LocalEngine

GREEDY = GenerationParams.greedy_defaults


def _image(seed: int = 0, h: int = 64, w: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)]


def test_info_reports_cpu_fp32_sdpa(tiny_engine: LocalEngine) -> None:
    info = tiny_engine.info()
    assert info.loaded and info.backend == "local"
    assert (info.device, info.dtype, info.attn_implementation, info.quantization) == ("cpu", "fp32", "sdpa", "none")


def test_image_question_counts_visual_tokens(tiny_engine: LocalEngine) -> None:
    # 64x96 image -> resized to multiples of 32 with the tiny processor's minimum of 4 tokens
    result = tiny_engine.generate([user(ImagePart(_image()), "Describe this image.")], GREEDY(12))
    assert result.completion_tokens >= 1
    assert result.metrics.visual_tokens == 6  # 64/32 * 96/32
    assert result.prompt_tokens > result.metrics.visual_tokens
    assert result.metrics.ttft_ms >= result.metrics.prefill_ms > 0
    assert result.metrics.peak_gpu_memory_bytes is None  # CPU


@pytest.mark.parametrize("kind", ["pil", "path", "array"])
def test_image_inputs_of_every_kind_give_the_same_answer(tiny_engine: LocalEngine, tmp_path: Path, kind: str) -> None:
    from PIL import Image

    arr = _image(3)
    reference = tiny_engine.generate([user(ImagePart(arr), "What is this?")], GREEDY(8)).text
    if kind == "pil":
        image = Image.fromarray(arr)
    elif kind == "path":
        image = tmp_path / "x.png"
        Image.fromarray(arr).save(image)
    else:
        image = arr
    assert tiny_engine.generate([user(ImagePart(image), "What is this?")], GREEDY(8)).text == reference


def test_video_prompt_carries_real_timestamps(tiny_engine: LocalEngine) -> None:
    # 8 frames sampled every 15 source frames of a 30 fps video, starting at frame 300 (10 s)
    indices = [300 + 15 * k for k in range(8)]
    part = VideoPart(_frames(8), indices, source_fps=30.0, total_frames=900)
    inputs = tiny_engine.build_inputs([user(part, "What happens?")])
    prompt = tiny_engine.processor.tokenizer.decode(inputs["input_ids"][0])
    stamps = [float(x) for x in re.findall(r"<([0-9.]+) seconds>", prompt)]
    # pairs (300,315) (330,345) ... -> mean times 10.25, 11.25, 12.25, 13.25 s
    assert stamps == pytest.approx([round(t, 1) for t in part.pair_timestamps()], abs=0.051)
    assert stamps == pytest.approx([10.2, 11.2, 12.2, 13.2], abs=0.051)
    assert len(stamps) == 4
    result = tiny_engine.generate([user(part, "What happens?")], GREEDY(5))
    assert result.metrics.visual_tokens == 4 * 4  # 4 temporal pairs x (64/32)^2


def test_video_at_another_fps_changes_the_timestamps(tiny_engine: LocalEngine) -> None:
    part = VideoPart(_frames(4), [0, 25, 50, 75], source_fps=25.0)
    prompt = tiny_engine.processor.tokenizer.decode(tiny_engine.build_inputs([user(part, "x")])["input_ids"][0])
    assert re.findall(r"<([0-9.]+) seconds>", prompt) == ["0.5", "2.5"]


def test_multi_turn_history_reaches_the_prompt(tiny_engine: LocalEngine) -> None:
    messages = [
        Message("system", "You are terse."),
        user(ImagePart(_image(1)), "What colour dominates?"),
        Message("assistant", "Mostly grey."),
        user("And the shape?"),
    ]
    inputs = tiny_engine.build_inputs(messages)
    prompt = tiny_engine.processor.tokenizer.decode(inputs["input_ids"][0])
    order = [prompt.index(s) for s in ("You are terse.", "What colour dominates?", "Mostly grey.", "And the shape?")]
    assert order == sorted(order)
    assert prompt.count("<|im_start|>") == 5  # 4 turns + the assistant prompt
    one_turn = tiny_engine.generate([user("And the shape?")], GREEDY(10)).text
    many = tiny_engine.generate(messages, GREEDY(10)).text
    assert many != one_turn  # the history changes the answer


def test_streaming_yields_the_same_text_as_the_result(tiny_engine: LocalEngine) -> None:
    stream = tiny_engine.stream([user(ImagePart(_image(2)), "Describe.")], GREEDY(16))
    chunks = list(stream)
    assert stream.result is not None
    assert len(chunks) >= 2
    assert "".join(chunks) == stream.result.text
    assert stream.result.text == tiny_engine.generate([user(ImagePart(_image(2)), "Describe.")], GREEDY(16)).text


@pytest.mark.parametrize("n", [1, 7])
def test_max_new_tokens_is_respected(tiny_engine: LocalEngine, n: int) -> None:
    result = tiny_engine.generate([user("Tell a long story about doors and cars.")], GREEDY(n))
    assert result.completion_tokens <= n
    if result.finish_reason == "length":
        assert result.completion_tokens == n


def test_same_seed_same_sample_and_other_seed_differs(tiny_engine: LocalEngine) -> None:
    msgs = [user(ImagePart(_image(4)), "Describe the scene in detail.")]
    sampled = [
        tiny_engine.generate(msgs, GenerationParams(max_new_tokens=24, temperature=1.0, top_p=1.0, top_k=0, seed=s)).text
        for s in (7, 7, 8)
    ]
    assert sampled[0] == sampled[1]
    assert sampled[0] != sampled[2]


def test_greedy_is_deterministic_and_differs_from_presence_penalty(tiny_engine: LocalEngine) -> None:
    msgs = [user("Describe the door and the car at 3:15.")]
    a = tiny_engine.generate(msgs, GREEDY(24))
    b = tiny_engine.generate(msgs, GREEDY(24))
    assert a.text == b.text
    penalised = tiny_engine.generate(msgs, GenerationParams(max_new_tokens=24, temperature=0.0, presence_penalty=50.0))
    ids = tiny_engine.processor.tokenizer(penalised.text)["input_ids"]
    # a presence penalty of 50 forbids repeating any generated token
    assert penalised.text != a.text or len(set(ids)) == len(ids)


def test_concurrent_requests_match_sequential_answers(tiny_engine: LocalEngine) -> None:
    questions = [[user(ImagePart(_image(10 + i)), f"Question {i}: what is shown?")] for i in range(4)]
    sequential = [tiny_engine.generate(q, GREEDY(12)).text for q in questions]
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            results[i] = tiny_engine.generate(questions[i], GREEDY(12)).text
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert [results[i] for i in range(4)] == sequential


def test_abandoned_stream_releases_the_model(tiny_engine: LocalEngine) -> None:
    stream = tiny_engine.stream([user("Write a very long text.")], GREEDY(4000))
    next(stream)
    stream.close()  # the user went away
    assert stream.result is not None and stream.result.finish_reason == "cancelled"
    assert stream.result.completion_tokens < 4000
    # the lock is free again: the next request runs
    assert tiny_engine.generate([user("hello")], GREEDY(3)).completion_tokens >= 1


def test_dropped_stream_without_close_also_releases(tiny_engine: LocalEngine) -> None:
    import gc

    s = tiny_engine.stream([user("Another long text please.")], GREEDY(4000))
    next(s)
    del s
    gc.collect()
    acquired = tiny_engine.generation_lock.acquire(timeout=60)
    assert acquired
    tiny_engine.generation_lock.release()


def test_ledger_records_each_request(tiny_engine: LocalEngine) -> None:
    before = len(tiny_engine.ledger.records())
    tiny_engine.generate([user(ImagePart(_image(5)), "x")], GREEDY(4), kind="ocr")
    records = tiny_engine.ledger.records()
    assert len(records) == before + 1
    last = records[-1]
    assert (last.kind, last.visual_tokens) == ("ocr", 6)
    assert last.completion_tokens >= 1 and last.ttft_ms > 0


def test_out_of_memory_gives_advice_and_engine_recovers(tiny_engine: LocalEngine, monkeypatch) -> None:
    import torch

    # A GPU cannot run here: inject the CUDA OOM error into the model call, not into the code under test.
    original = tiny_engine.model.generate

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(tiny_engine.model, "generate", oom)
    with pytest.raises(OutOfMemory) as info:
        tiny_engine.generate([user(ImagePart(_image()), "x")], GREEDY(4))
    message = str(info.value)
    assert "fewer frames" in message and "quantization" in message and "resolution" in message
    assert tiny_engine.ledger.records()[-1].status == "error"
    monkeypatch.setattr(tiny_engine.model, "generate", original)
    assert tiny_engine.generate([user("again")], GREEDY(3)).completion_tokens >= 1


def test_bad_inputs_give_clear_errors(tiny_engine: LocalEngine, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="no messages"):
        tiny_engine.generate([], GREEDY(3))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InvalidRequest, match="could not be read"):
        tiny_engine.generate([user(ImagePart(broken), "x")], GREEDY(3))
    with pytest.raises(InvalidRequest, match="does not exist"):
        tiny_engine.generate([user(ImagePart(tmp_path / "missing.jpg"), "x")], GREEDY(3))
    with pytest.raises(ValueError, match="frame indices"):
        VideoPart(_frames(3), [0, 1], 30.0)
    with pytest.raises(ValueError, match="fps"):
        VideoPart(_frames(2), [0, 1], 0)


def test_missing_model_is_model_unavailable_with_the_fix(tmp_path: Path) -> None:
    engine = LocalEngine(Settings(model="Qwen/Qwen3-VL-NotThere-Instruct", offline=True, cache_dir=tmp_path))
    with pytest.raises(ModelUnavailable) as info:
        engine.generate([user("hi")])
    text = str(info.value)
    assert "Qwen/Qwen3-VL-NotThere-Instruct" in text
    assert "hf download Qwen/Qwen3-VL-NotThere-Instruct" in text
    assert "VLSCOPE_MODEL" in text
    assert engine.info().error == text and not engine.info().loaded

    folder = LocalEngine(Settings(model=str(tmp_path / "no-such-folder"), cache_dir=tmp_path))
    with pytest.raises(ModelUnavailable, match="does not exist"):
        folder.load()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelUnavailable, match="no config.json"):
        LocalEngine(Settings(model=str(empty), cache_dir=tmp_path)).load()


def test_quantization_on_cpu_explains_it_needs_cuda(tiny_model_dir: Path, tmp_path: Path) -> None:
    from core.vlm import EngineError

    engine = LocalEngine(Settings(model=str(tiny_model_dir), quantization="4bit", cache_dir=tmp_path))
    with pytest.raises(EngineError, match="needs a CUDA GPU"):
        engine.load()


def test_text_part_and_string_content_are_equivalent(tiny_engine: LocalEngine) -> None:
    a = tiny_engine.generate([Message("user", "plain question")], GREEDY(6)).text
    b = tiny_engine.generate([Message("user", [TextPart("plain question")])], GREEDY(6)).text
    assert a == b
