"""The kept prefix prefilled while a video is ingested (issue 14): each encoded part's tokens go through the language
model as the part comes, so the first question prefills its own words only. The prefix is the one a one-pass
prefill makes (same KV, same greedy answer as the frames given whole); a cancelled ingest keeps no partial prefix;
a prompt that does not continue what was prefilled is refused, never kept. Chunks attend through two maskless
calls merged by their log-sum-exp (`core.vlm.chunk_attention`), exact against one SDPA call with a mask."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as TF

from core.analysis.qa import VideoQA
from core.analysis.sources import MediaFrameSource
from core.cache import ResultCache
from core.errors import Cancelled
from core.media.sampling import SamplingPlan
from core.settings import Settings
from core.vlm import GenerationParams, InvalidRequest
from core.vlm import features as F
from core.vlm import prefix_disk, prefixstream
from core.vlm.chunk_attention import attend_chunk, chunked_attention
from core.vlm.featureparts import part_meta
from core.vlm.local import LocalEngine

GREEDY = GenerationParams.greedy_defaults
PLAN = SamplingPlan(fps=1.0, max_frames=24)
QUESTION = "What does the square do?"


def _engine(model: Path, folder: Path | None) -> LocalEngine:
    e = LocalEngine(Settings(model=str(model), cache_dir=model.parent / "unused-cache"),
                    feature_store=ResultCache(folder) if folder is not None else None)
    e.load()
    if e.feature_memory is not None:
        e.feature_memory.chunk_groups = 2  # parts of 4 frames: 24 frames make 6 parts
    return e


def _qa(engine: LocalEngine, video: Path) -> VideoQA:
    return VideoQA(engine, MediaFrameSource(video, plan=PLAN), max_frames=PLAN.max_frames)


@pytest.fixture
def feeds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The temporal groups reached by each part the prefix stream was fed."""
    class Got(list):
        streams: list = []

    got = Got()
    got.streams = []
    real = prefixstream.PrefixStream.feed

    def feed(self, frames, groups, pooler, deepstack):  # type: ignore[no-untyped-def]
        got.append(groups)
        if self not in got.streams:
            got.streams.append(self)
        return real(self, frames, groups, pooler, deepstack)

    monkeypatch.setattr(prefixstream.PrefixStream, "feed", feed)
    return got


def test_chunk_attention_is_exact_against_one_masked_call() -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 8, 5, 16), torch.randn(1, 2, 19, 16), torch.randn(1, 2, 19, 16)
    keys, values = k.repeat_interleave(4, 1), v.repeat_interleave(4, 1)
    mask = torch.ones(5, 19, dtype=torch.bool).tril(14)  # the chunk's 5 queries are the last 5 of 19 positions
    expected = TF.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    assert float((attend_chunk(q, k, v) - expected).abs().max()) < 1e-5
    whole = torch.randn(1, 8, 19, 16)  # no keys before the chunk: plain causal attention
    expected = TF.scaled_dot_product_attention(whole, keys, values, is_causal=True)
    assert float((attend_chunk(whole, k, v) - expected).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="5 queries but only 3 keys"):
        attend_chunk(q, k[:, :, :3], v[:, :, :3])


def test_the_switch_is_undone_and_leaves_other_attentions_alone() -> None:
    class Config:
        _attn_implementation = "sdpa"

    class Model:
        config = Config()

    with chunked_attention(Model()) as on:
        assert on and Model.config._attn_implementation == "vlscope_chunked"
    assert Model.config._attn_implementation == "sdpa"
    Model.config._attn_implementation = "flash_attention_2"  # handles chunks itself
    with chunked_attention(Model()) as on:
        assert not on and Model.config._attn_implementation == "flash_attention_2"


@pytest.mark.parametrize("apart", [False, True], ids=["decoded-in-threads", "decoded-in-processes"])
def test_the_first_question_finds_the_prefix_prefilled_during_the_ingest(
        tiny_model_dir: Path, tmp_path: Path, video: Path, feeds: list[int], apart: bool) -> None:
    """Decoded in worker processes, each part is fed as it comes (not after the decoding): the same prefix."""
    streams = feeds.streams  # type: ignore[attr-defined]
    fresh = _engine(tiny_model_dir, None)
    try:
        expected = "".join(_qa(fresh, video).stream_answer(QUESTION, GREEDY(12), refine=False))
    finally:
        fresh.close()
    engine = _engine(tiny_model_dir, tmp_path / "results")
    try:
        qa = _qa(engine, video)
        qa.source.decode_processes = apart
        assert qa.source.ingest_input().read_apart is apart
        text = "".join(qa.stream_answer(QUESTION, GREEDY(12), refine=False))
        result = qa.last_result
        # 24 frames, 12 groups, parts of 2 groups: each fed in order
        assert feeds == [2, 4, 6, 8, 10, 12]
        assert len(streams) == 1 and streams[0].prompts == 1  # every part at its planned frames: tokens made once
        assert engine.feature_memory.last_ingest.parts == 6
        assert result.reused_prefix  # the question prefilled its own words only
        assert text == expected
        # the kept prefix is the one a one-pass prefill of the stored features makes
        (entry,) = [kept.prefix for kept in engine.prefixes._items.values()]
        features = engine.feature_memory.load(qa.source.content_key(), engine.model.device)
        inputs = {"input_ids": entry.input_ids, "mm_token_type_ids": entry.mm_token_type_ids, **entry.grids}
        with engine.generation_lock:
            kv, deltas = F.prefill(engine.model, inputs, features)
        assert torch.equal(deltas, entry.rope_deltas)
        assert prefix_disk._names_of(entry) is not None  # a plain cache: the disk tier keeps it for a restart
        for one, streamed in zip(kv.layers, entry.kv.layers):
            assert one.keys.shape == streamed.keys.shape
            assert float((one.keys - streamed.keys).abs().max()) < 1e-4
            assert float((one.values - streamed.values).abs().max()) < 1e-4
        # a follow-up reuses the same prefix; a second ingest of the stored video builds nothing
        again = "".join(qa.stream_answer(QUESTION, GREEDY(12), refine=False))
        assert again == expected and qa.last_result.reused_prefix
        assert len(feeds) == 6  # nothing fed again
    finally:
        engine.close()


def test_aligned_chunks_straddle_the_parts_and_every_shape_is_warmed_ahead(
        tiny_model_dir: Path, tmp_path: Path, video: Path, feeds: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of a fixed size whatever the parts (rows held over to the next feed): the same KV as one pass, and
    the (queries, keys) of every chunked attention call are the ones `warm` lists before the first part."""
    from core.vlm import chunk_attention

    monkeypatch.setattr(prefixstream, "STREAM_CHUNK", 48)
    calls: list[tuple[int, int]] = []
    real = chunk_attention.attend_chunk

    def attend(q, k, v, scale=None):  # type: ignore[no-untyped-def]
        calls.append((int(q.shape[2]), int(k.shape[2])))
        return real(q, k, v, scale)

    monkeypatch.setattr(chunk_attention, "attend_chunk", attend)
    warmed: list = []
    real_warm = prefixstream.PrefixStream.warm
    monkeypatch.setattr(prefixstream.PrefixStream, "warm",
                        lambda self: (real_warm(self), warmed.extend(self.builder.chunk_shapes()))[0])
    engine = _engine(tiny_model_dir, tmp_path / "results")
    try:
        qa = _qa(engine, video)
        "".join(qa.stream_answer(QUESTION, GREEDY(4), refine=False))
        assert qa.last_result.reused_prefix and feeds == [2, 4, 6, 8, 10, 12]
        (entry,) = [kept.prefix for kept in engine.prefixes._items.values()]
        total = int(entry.input_ids.shape[1])
        layers = engine.model.config.text_config.num_hidden_layers
        expected = [(48, end) for end in range(48, total + 1, 48)] + ([(total % 48, total)] if total % 48 else [])
        assert warmed == expected and len(expected) >= 6  # several chunks of 48 over six parts
        assert sorted(set(calls)) == sorted(expected) and len(calls) == len(expected) * layers
        features = engine.feature_memory.load(qa.source.content_key(), engine.model.device)
        inputs = {"input_ids": entry.input_ids, "mm_token_type_ids": entry.mm_token_type_ids, **entry.grids}
        with engine.generation_lock:
            kv, _ = F.prefill(engine.model, inputs, features)
        for one, streamed in zip(kv.layers, entry.kv.layers):
            assert float((one.keys - streamed.keys).abs().max()) < 1e-4
            assert float((one.values - streamed.values).abs().max()) < 1e-4
    finally:
        engine.close()


def test_a_cancelled_ingest_keeps_no_partial_prefix(tiny_model_dir: Path, tmp_path: Path, video: Path,
                                                    feeds: list[int]) -> None:
    engine = _engine(tiny_model_dir, tmp_path / "results")
    try:
        qa = _qa(engine, video)
        key = qa.source.content_key()
        cancel = threading.Event()

        def stop_after_two(fraction: float, message: str = "", stage: str = "") -> None:
            if "part 2 of" in message:
                cancel.set()

        with pytest.raises(Cancelled):
            engine.feature_memory.ingest(key, qa.source.ingest_input(), stop_after_two, cancel,
                                         prefix_of=lambda meta: qa.prefix_messages(meta, key))
        assert feeds in ([], [2], [2, 4])  # at most the two parts encoded when the ingest stopped
        assert len(engine.prefixes) == 0
        # the ingest resumes at its stored parts; the prefix is then prefilled from all six
        before = len(feeds)
        engine.feature_memory.ingest(key, qa.source.ingest_input(),
                                     prefix_of=lambda meta: qa.prefix_messages(meta, key))
        assert feeds[before:] == [2, 4, 6, 8, 10, 12] and len(engine.prefixes) == 1
    finally:
        engine.close()


def test_the_parts_are_stored_once_the_prefix_is_prefilled(tiny_model_dir: Path, tmp_path: Path, video: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing the features beside the prefill slowed the first answer: while a question waits, they are stored
    after its prefix (and all of them: a restart finds the video)."""
    engine = _engine(tiny_model_dir, tmp_path / "results")
    try:
        events: list[str] = []
        store = engine.feature_memory.store
        put = store.put_bytes
        monkeypatch.setattr(store, "put_bytes", lambda key, blob: (events.append("stored"), put(key, blob))[1])
        finish = prefixstream.PrefixStream.finish
        monkeypatch.setattr(prefixstream.PrefixStream, "finish",
                            lambda self, meta: (finish(self, meta), events.append("prefilled"))[0])
        qa = _qa(engine, video)
        "".join(qa.stream_answer(QUESTION, GREEDY(4), refine=False))
        engine.feature_memory.wait()
        assert events == ["prefilled"] + ["stored"] * 7  # six parts, then the manifest
        assert engine.feature_memory.lookup(qa.source.content_key()) is not None
    finally:
        engine.close()


def test_a_follow_up_does_not_wait_for_the_parts_to_be_written(tiny_model_dir: Path, tmp_path: Path, video: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(tiny_model_dir, tmp_path / "results")
    gate = threading.Event()  # the store writes nothing until the test opens it
    try:
        store = engine.feature_memory.store
        put = store.put_bytes
        monkeypatch.setattr(store, "put_bytes", lambda key, blob: (gate.wait(60), put(key, blob))[1])
        qa = _qa(engine, video)
        "".join(qa.stream_answer(QUESTION, GREEDY(4), refine=False))
        got: dict = {}

        def follow_up() -> None:
            got["text"] = "".join(qa.stream_answer("And after that?", GREEDY(4), refine=False))
            got["reused"] = qa.last_result.reused_prefix

        asker = threading.Thread(target=follow_up)
        asker.start()
        asker.join(30)
        assert not asker.is_alive() and got["reused"]  # answered from the kept prefix, nothing stored yet
        gate.set()
        engine.feature_memory.wait()
        engine.feature_memory.forget(qa.source.content_key())
        assert engine.feature_memory.lookup(qa.source.content_key()) is not None  # and then stored
    finally:
        gate.set()
        engine.close()


def test_the_parts_wait_while_the_model_serves_a_request_unless_someone_waits_for_them(
        tiny_model_dir: Path, tmp_path: Path, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Storing the features beside a follow-up slowed its first token (H200: 0.14 s to 0.38 s): after the ingest a
    part is not written while the model runs a request, but a process that waits for the store (closing) gets it."""
    engine = _engine(tiny_model_dir, tmp_path / "results")
    entered, gate = threading.Event(), threading.Event()
    written: list[bool] = []  # per write: the model busy at that moment
    try:
        store = engine.feature_memory.store
        put = store.put_bytes

        def slow_put(key, blob):
            entered.set()
            gate.wait(60)  # the first write is held until the test has taken the model
            written.append(engine.generation_lock.locked())
            return put(key, blob)

        monkeypatch.setattr(store, "put_bytes", slow_put)
        qa = _qa(engine, video)
        "".join(qa.stream_answer(QUESTION, GREEDY(4), refine=False))
        assert entered.wait(30)
        with engine.generation_lock:  # a request is running now
            gate.set()
            time.sleep(0.5)
            assert len(written) == 1  # the part already being written, then nothing more while the model is busy
            engine.feature_memory.wait()  # someone waits for the store: the parts no longer yield
            assert len(written) == 7  # six parts and the manifest
        engine.feature_memory.forget(qa.source.content_key())
        assert engine.feature_memory.lookup(qa.source.content_key()) is not None
    finally:
        gate.set()
        engine.close()


def test_a_prompt_that_does_not_continue_the_prefilled_tokens_is_refused(tiny_model_dir: Path, tmp_path: Path,
                                                                        video: Path) -> None:
    engine = _engine(tiny_model_dir, tmp_path / "results")
    try:
        qa = _qa(engine, video)
        key = qa.source.content_key()
        engine.feature_memory.ingest(key, qa.source.ingest_input())
        features = engine.feature_memory.load(key, engine.model.device)
        meta = features.meta
        text = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
        first = part_meta(meta, 0, 2)
        n = first.grid[0] * first.tokens_per_group
        builder = F.PrefixBuilder(engine.model)
        with engine.generation_lock:
            builder.set_prompt(F.prompt_inputs(engine.processor, text, first, engine.model.device))
            builder.feed(features.pooler[:n], [d[:n] for d in features.deepstack])
            other = F.prompt_inputs(engine.processor, "<|im_start|>system\nx" + text, meta, engine.model.device)
            with pytest.raises(ValueError, match="does not continue"):
                builder.set_prompt(other)
            with pytest.raises(InvalidRequest, match="video tokens"):
                builder.feed(features.pooler, features.deepstack)  # more rows than the prompt has video tokens
    finally:
        engine.close()


def _same_kv(a: object, b: object) -> None:
    for one, other in zip(a.layers, b.layers):  # type: ignore[attr-defined]
        assert one.keys.shape == other.keys.shape
        assert float((one.keys - other.keys).abs().max()) < 1e-4
        assert float((one.values - other.values).abs().max()) < 1e-4


def test_a_part_decoded_at_other_frames_than_planned_gets_its_own_timestamps(tiny_model_dir: Path, tmp_path: Path,
                                                                             video: Path) -> None:
    """A plan that takes key frames may decode another frame than the one planned: the prompt's tokens are made
    again from the real frame numbers, and the prefix is the one-pass prefix of the video as decoded."""
    from dataclasses import replace

    from core.vlm.featureparts import split_parts

    engine = _engine(tiny_model_dir, tmp_path / "results")
    try:
        qa = _qa(engine, video)
        key = qa.source.content_key()
        engine.feature_memory.ingest(key, qa.source.ingest_input())  # no prefix asked for
        features = engine.feature_memory.load(key, engine.model.device)
        meta = features.meta
        real = list(meta.frame_indices)
        planned = replace(meta, frame_indices=real[:-2] + [real[-2] - 4, real[-1] - 3])
        stream = prefixstream.stream_prefix(engine._runner, qa.prefix_messages(meta, key), planned)
        assert stream is not None
        for part, (g0, g1) in zip(split_parts(features, 2), [(g, g + 2) for g in range(0, 12, 2)]):
            stream.feed(real[:g1 * 2], g1, part.pooler, part.deepstack)
        entry = stream.finish(meta)
        assert stream.prompts == 2  # the plan's tokens, then the last part's real timestamps
        expected = F.prompt_inputs(engine.processor, stream.prefix_text, meta, engine.model.device)
        assert torch.equal(entry.input_ids, expected["input_ids"])
        with engine.generation_lock:
            kv, _ = F.prefill(engine.model, expected, features)
        _same_kv(kv, entry.kv)
        assert engine.prefixes.tier_of(entry.key) == "device"
    finally:
        engine.close()


def test_the_cache_is_filled_in_place_only_for_full_attention_models() -> None:
    from types import SimpleNamespace

    from core.vlm.prefixbuild import _filled_cache, _plain

    full = SimpleNamespace(config=SimpleNamespace(text_config=SimpleNamespace(num_hidden_layers=2, layer_types=None)))
    kv = _filled_cache(full, 10)
    k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    for layer in range(2):
        kv.update(k, v, layer)
        kv.update(k * 2, v * 2, layer)
    assert kv.get_seq_length() == 8
    plain = _plain(kv)
    assert type(plain.layers[0]).__name__ == "DynamicLayer"
    assert torch.equal(plain.layers[1].keys, torch.cat([k, k * 2], dim=2))
    with pytest.raises(ValueError, match="12 tokens for a prompt of 10"):
        kv2 = _filled_cache(full, 10)
        kv2.update(torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8), 0)
    linear = SimpleNamespace(config=SimpleNamespace(text_config=SimpleNamespace(
        num_hidden_layers=4, layer_types=["linear_attention"] * 3 + ["full_attention"])))
    assert _filled_cache(linear, 10) is None  # Qwen3.5: the model makes its own cache


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_chunk_attention_on_the_gpu_matches_one_masked_call() -> None:
    """The CUDA kernels (cuDNN, else flash) with their log-sum-exp, bf16, the 4B's heads."""
    torch.manual_seed(0)
    dev = "cuda"
    q = torch.randn(1, 32, 384, 128, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, 8, 2048, 128, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, 8, 2048, 128, device=dev, dtype=torch.bfloat16)
    mask = torch.ones(384, 2048, dtype=torch.bool, device=dev).tril(2048 - 384)
    expected = TF.scaled_dot_product_attention(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1),
                                               attn_mask=mask)
    assert float((attend_chunk(q, k, v).float() - expected.float()).abs().max()) < 2e-2
