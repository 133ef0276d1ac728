"""Visual memory: a video's visual features encoded once, kept in the real result cache as safetensors bytes, and
used by later requests (in another process too) to prefill the language model only, with the same answer."""

from __future__ import annotations

import ast
import json
import logging
import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cache import ResultCache
from core.settings import Settings
from core.vlm import EngineError, GenerationParams, InvalidRequest, VideoPart, user
from core.vlm import features as F
from core.vlm.featurestore import FeatureMemory, StoredFeaturesUnreadable, store_key
from core.vlm.local import LocalEngine

GREEDY = GenerationParams.greedy_defaults
ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What happens in this video?"


def _frames(n: int = 8, seed: int = 0, h: int = 64, w: int = 96) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _part(key: str | None, n: int = 8, seed: int = 0) -> VideoPart:
    return VideoPart(_frames(n, seed), [30 * i for i in range(n)], source_fps=30.0, total_frames=30 * n, cache_key=key)


def _backed(meta: F.FeatureMeta, *keys: str) -> VideoPart:
    return VideoPart([], meta.frame_indices, meta.source_fps, meta.total_frames, features_from=keys)


def _engine(model: Path, store: object | None = None, **kw: object) -> LocalEngine:
    e = LocalEngine(Settings(model=str(model), cache_dir=model.parent / "unused-cache", **kw), feature_store=store)
    e.load()
    return e


def _no_vision_tower(engine: LocalEngine) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the vision tower ran")

    engine.model.model.visual.forward = refuse


@pytest.fixture(scope="module")
def fresh(tiny_model_dir: Path) -> LocalEngine:
    """An engine without a feature store: every answer comes from the frames (today's path)."""
    e = _engine(tiny_model_dir)
    yield e
    e.close()


# -- the format ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_round_trip_keeps_dtype_shape_and_values_and_is_plain_safetensors(dtype: torch.dtype) -> None:
    meta = F.FeatureMeta(grid=[3, 4, 6], frame_indices=[0, 10, 20, 30, 40], source_fps=25.0, total_frames=50,
                         resized=[64, 96], frame_hw=[120, 180], patch=16, merge=2, temporal_patch=2,
                         dtype=str(dtype).removeprefix("torch."), max_pixels_total=4096 * 10)
    n = 3 * 4 * 6 // 4
    feats = F.VisualFeatures(meta, torch.randn(n, 64).to(dtype), [torch.randn(n, 64).to(dtype) for _ in range(3)])
    blob = F.to_bytes(feats)
    header_len = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + header_len])
    assert blob[8:9] == b"{" and json.loads(header["__metadata__"]["vlscope"])["grid"] == [3, 4, 6]
    assert header["pooler"]["dtype"] == {torch.bfloat16: "BF16", torch.float32: "F32"}[dtype]
    back = F.from_bytes(blob)
    assert back.meta == meta
    for a, b in zip([feats.pooler, *feats.deepstack], [back.pooler, *back.deepstack]):
        assert b.dtype == dtype and b.shape == a.shape and torch.equal(a, b)
    from safetensors.torch import load

    assert sorted(load(blob)) == ["deepstack.0", "deepstack.1", "deepstack.2", "pooler"]  # any safetensors reader


def test_the_feature_code_never_imports_pickle() -> None:
    for name in ("features.py", "featurestore.py"):
        tree = ast.parse((ROOT / "core" / "vlm" / name).read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"pickle", "dill", "cloudpickle", "joblib"}, name
        calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert "torch.load" not in calls and "torch.save" not in calls, name


def test_damaged_bytes_wrong_shapes_and_versions_are_refused() -> None:
    meta = F.FeatureMeta(grid=[1, 2, 2], frame_indices=[0, 1], source_fps=1.0, total_frames=2, resized=[32, 32],
                         frame_hw=[32, 32], patch=16, merge=2, temporal_patch=2, dtype="float32")
    blob = F.to_bytes(F.VisualFeatures(meta, torch.zeros(1, 8), [torch.zeros(1, 8)]))
    with pytest.raises(ValueError, match="truncated"):
        F.read_header(blob[:-3])
    with pytest.raises(ValueError, match="rows"):
        F.read_header(F.to_bytes(F.VisualFeatures(meta, torch.zeros(2, 8), [torch.zeros(2, 8)])))
    with pytest.raises(ValueError, match="format version 0"):
        F.read_header(blob.replace(b'\\"version\\": 2', b'\\"version\\": 0'))
    with pytest.raises(ValueError, match="deepstack.0"):
        F.read_header(F.to_bytes(F.VisualFeatures(meta, torch.zeros(1, 8), [torch.zeros(1, 4)])))


# -- engine: encode once, ask forever ------------------------------------------------------------------
SUBPROCESS = """
import json, sys
import numpy as np
from core.cache import ResultCache
from core.settings import Settings
from core.vlm import GenerationParams, VideoPart, user
from core.vlm.local import LocalEngine
rng = np.random.default_rng(0)
frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(8)]
engine = LocalEngine(Settings(model=sys.argv[1], cache_dir=sys.argv[2] + "-unused"), feature_store=ResultCache(sys.argv[2]))
part = VideoPart(frames, [30 * i for i in range(8)], source_fps=30.0, total_frames=240, cache_key=sys.argv[3])
r = engine.generate([user(part, sys.argv[4])], GenerationParams.greedy_defaults(16))
print(json.dumps({"text": r.text, "features": r.metrics.visual_features}))
"""


def test_features_stored_in_another_process_give_the_fresh_answer_without_the_vision_tower(
        tiny_model_dir: Path, tmp_path: Path, fresh: LocalEngine) -> None:
    folder = tmp_path / "results"
    done = subprocess.run([sys.executable, "-c", SUBPROCESS, str(tiny_model_dir), str(folder), "clip-a", QUESTION],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    first = json.loads(done.stdout.strip().splitlines()[-1])
    expected = fresh.generate([user(_part(None), QUESTION)], GREEDY(16))
    assert first == {"text": expected.text, "features": "encoded"}

    cache = ResultCache(folder)
    stages = [e.stage for e in cache.entries()]  # a manifest and the parts it names
    assert stages.count("vlm-features") == 1 and set(stages) == {"vlm-features", "vlm-features-part"}
    engine = _engine(tiny_model_dir, cache)
    try:
        _no_vision_tower(engine)
        with pytest.raises(EngineError, match="the vision tower ran"):  # the spy works
            engine.generate([user(_part("clip-new", seed=1), QUESTION)], GREEDY(2))
        meta = engine.feature_memory.lookup("clip-a")
        assert meta.frame_indices == [30 * i for i in range(8)] and meta.grid == [4, 4, 6]
        got = engine.generate([user(_backed(meta, "clip-a"), QUESTION)], GREEDY(16))
        tok = engine.processor.tokenizer
        assert tok(got.text)["input_ids"] == tok(expected.text)["input_ids"]
        assert got.text == expected.text and got.completion_tokens == expected.completion_tokens
        assert got.metrics.visual_features == "stored" and got.prompt_tokens == expected.prompt_tokens
        # frames given again under the same key: the stored features are used, not the vision tower
        again = engine.generate([user(_part("clip-a"), "And then?")], GREEDY(8))
        assert again.text == fresh.generate([user(_part(None), "And then?")], GREEDY(8)).text
    finally:
        engine.close()


def test_fast_decoder_takes_the_same_prefix_from_features(tiny_model_dir: Path, tmp_path: Path) -> None:
    fast_fresh = _engine(tiny_model_dir, fast_decode="on", prefix_cache_gb=0)
    expected = fast_fresh.generate([user(_part(None, seed=4), QUESTION)], GREEDY(12))
    fast_fresh.close()
    cache = ResultCache(tmp_path / "results")
    engine = _engine(tiny_model_dir, cache, fast_decode="on", prefix_cache_gb=0)  # reuse off: features still kept
    try:
        first = engine.generate([user(_part("clip-f", seed=4), QUESTION)], GREEDY(12))
        assert (first.text, first.metrics.visual_features, first.metrics.decode_path) == (expected.text, "encoded",
                                                                                          "static")
        _no_vision_tower(engine)
        meta = engine.feature_memory.lookup("clip-f")
        got = engine.generate([user(_backed(meta, "clip-f"), QUESTION)], GREEDY(12))
        assert (got.text, got.metrics.visual_features) == (expected.text, "stored")
    finally:
        engine.close()


def _damage(folder: Path, key: str) -> None:
    """Cut the stored bytes of `key` in half, where the disk cache keeps them (a value file or the row)."""
    with sqlite3.connect(folder / "cache.db") as db:
        filename, value = db.execute("SELECT filename, value FROM Cache WHERE key = ?", (key,)).fetchone()
        if filename:
            path = folder / filename
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        else:
            db.execute("UPDATE Cache SET value = ? WHERE key = ?", (bytes(value)[: len(value) // 2], key))


def test_damaged_stored_features_are_a_reported_miss_and_computed_again(
        tiny_model_dir: Path, tmp_path: Path, fresh: LocalEngine, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "results"
    cache = ResultCache(folder)
    engine = _engine(tiny_model_dir, cache)
    try:
        engine.generate([user(_part("clip-d", seed=2), QUESTION)], GREEDY(4))
        memory = engine.feature_memory
        key = str(store_key("clip-d", memory.material))
        expected = fresh.generate([user(_part(None, seed=2), QUESTION)], GREEDY(12))
        _damage(folder, key)
        memory.forget("clip-d")
        with pytest.raises(StoredFeaturesUnreadable, match="could not be used .*Send the video's frames again"):
            memory.lookup("clip-d")
        engine.prefixes.clear()
        with caplog.at_level(logging.WARNING):
            got = engine.generate([user(_part("clip-d", seed=2), QUESTION)], GREEDY(12))
        assert got.text == expected.text and got.metrics.visual_features == "encoded"
        assert "unreadable" in caplog.text
        memory.forget("clip-d")
        assert memory.lookup("clip-d").grid == [4, 4, 6]  # stored anew
        # bytes that are not features at all (a valid cache entry) are refused the same way
        cache.put_bytes(store_key("clip-d", memory.material), b"not safetensors")
        memory.forget("clip-d")
        with pytest.raises(StoredFeaturesUnreadable, match="could not be used"):
            memory.lookup("clip-d")
    finally:
        engine.close()


def test_bf16_features_round_trip_through_the_cache(tiny_model_dir: Path, tmp_path: Path) -> None:
    plain = _engine(tiny_model_dir, dtype="bf16")
    expected = plain.generate([user(_part(None, seed=6), QUESTION)], GREEDY(10)).text
    plain.close()
    cache = ResultCache(tmp_path / "results")
    engine = _engine(tiny_model_dir, cache, dtype="bf16")
    try:
        assert engine.generate([user(_part("clip-b", seed=6), QUESTION)], GREEDY(10)).text == expected
        stored = engine.feature_memory.load("clip-b")
        assert stored.pooler.dtype == torch.bfloat16 and stored.meta.dtype == "bfloat16"
        engine.prefixes.clear()
        _no_vision_tower(engine)
        got = engine.generate([user(_backed(stored.meta, "clip-b"), QUESTION)], GREEDY(10))
        assert got.text == expected and got.metrics.visual_features == "stored"
    finally:
        engine.close()


def test_chunked_encoding_and_composed_windows_are_exact(tiny_model_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(tiny_model_dir, ResultCache(tmp_path / "results"))
    try:
        memory: FeatureMemory = engine.feature_memory
        frames = _frames(12, seed=8, h=96, w=128)
        overview = VideoPart(frames[::2], list(range(0, 120, 20)), 10.0, 120, cache_key="v:overview")
        window = VideoPart(frames[6:10], list(range(60, 100, 10)), 10.0, 120, cache_key="v:window")
        ov = memory.encode(overview)
        win = memory.encode(window, frame_size=(ov.resized[0], ov.resized[1]))
        assert win.grid[1:] == ov.grid[1:]
        # one vision-tower call per temporal group gives the same features as one call over all of them
        whole = memory.load("v:overview")
        monkeypatch.setattr(F, "CHUNK_GROUPS", 1)
        pixels, meta = F.video_pixels(engine.processor, overview)
        chunked = F.encode(engine.model, pixels, meta)
        assert torch.equal(chunked.pooler, whole.pooler) and torch.equal(chunked.deepstack[0], whole.deepstack[0])
        # overview pairs before the window + the window's pairs == encoding exactly those frames at that size
        mixed = VideoPart([], [0, 20, 60, 70, 80, 90], 10.0, 120, features_from=("v:overview", "v:window"))
        composed = F.compose([memory.load("v:overview"), memory.load("v:window")], mixed)
        direct_frames = [frames[0], frames[2], frames[6], frames[7], frames[8], frames[9]]
        direct = VideoPart(direct_frames, mixed.frame_indices, 10.0, 120)
        px, m = F.video_pixels(engine.processor, direct, frame_size=(ov.resized[0], ov.resized[1]))
        reference = F.encode(engine.model, px, m)
        assert composed.meta.grid == reference.meta.grid == [3, *ov.grid[1:]]
        assert torch.equal(composed.pooler, reference.pooler)
        assert torch.equal(composed.deepstack[0], reference.deepstack[0])
        with pytest.raises(InvalidRequest, match="not among the stored features"):
            F.compose([whole], VideoPart([], [0, 30], 10.0, 120, features_from=("v:overview",)))
    finally:
        engine.close()


def test_feature_backed_parts_need_a_feature_store(fresh: LocalEngine) -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        VideoPart([], [0, 1], 30.0)
    with pytest.raises(ValueError, match="no frames"):
        VideoPart(_frames(2), [0, 1], 30.0, features_from=("k",))
    with pytest.raises(InvalidRequest, match="feature store"):
        fresh.generate([user(VideoPart([], [0, 30], 30.0, features_from=("k",)), "q")], GREEDY(2))


def test_a_prefill_in_chunks_gives_the_same_answer(tiny_model_dir: Path, tmp_path: Path, fresh: LocalEngine) -> None:
    """`prefill_chunk_tokens` bounds activation memory; chunks of 7 tokens (visual tokens and DeepStack rows split
    across chunks) give the same greedy answer as the whole prefix at once."""
    expected = fresh.generate([user(_part(None), QUESTION)], GREEDY(16))
    for chunk in (7, 0):
        cache = ResultCache(tmp_path / f"c{chunk}")
        engine = _engine(tiny_model_dir, cache, prefill_chunk_tokens=chunk)
        try:
            assert engine.feature_memory.chunk_tokens == chunk
            got = engine.generate([user(_part(f"clip-{chunk}"), QUESTION)], GREEDY(16))
            assert got.text == expected.text, chunk
        finally:
            engine.close()
            cache.close()


def test_the_prefill_chunks_only_when_memory_asks_for_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "c")
    engine = _engine(tiny_model_dir, cache, prefill_chunk_tokens=8192)
    try:
        memory = engine.feature_memory
        assert memory.chunk_for(4000) == 0  # shorter than a chunk: one pass
        assert memory.chunk_for(50_000) == 8192  # on the CPU: chunks as set
        memory.chunk_tokens = 0
        assert memory.chunk_for(50_000) == 0  # 0: always one pass
    finally:
        engine.close()
        cache.close()
