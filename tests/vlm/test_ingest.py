"""The pipelined ingest of a video into the visual memory (issue 14): decoded, preprocessed and encoded part by
part, each part stored as it is done, the manifest last. Exact against the frames given whole; a killed ingest
resumes at its last stored part; a cancelled one keeps what it stored; a damaged part is encoded again; a lookup
reads the small manifest only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from core.analysis.sources import MediaFrameSource
from core.cache import ResultCache
from core.errors import Cancelled
from core.media.sampling import SamplingPlan
from core.settings import Settings
from core.vlm import features as F
from core.vlm.featurestore import PART_STAGE, STAGE, StoredFeaturesUnreadable, part_key, store_key
from core.vlm.local import LocalEngine

ROOT = Path(__file__).resolve().parents[2]
PLAN = SamplingPlan(fps=1.0, max_frames=24)
KEY = "clip-ingest"


def _engine(model: Path, folder: Path) -> LocalEngine:
    e = LocalEngine(Settings(model=str(model), cache_dir=model.parent / "unused-cache"),
                    feature_store=ResultCache(folder))
    e.load()
    e.feature_memory.chunk_groups = 2  # parts of 4 frames: 24 frames make 6 parts
    return e


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LocalEngine:
    e = _engine(tiny_model_dir, tmp_path_factory.mktemp("shared-results"))
    yield e
    e.close()


def _whole(engine: LocalEngine, video: Path) -> F.VisualFeatures:
    """The features of the overview's frames given whole: the same frames, the processor over the whole clip at the
    plan's pixel budget (its own resize choice), one encode."""
    from core.vlm.types import VideoPart

    source = MediaFrameSource(video, plan=PLAN)
    src = source.ingest_input()
    frames = list(src.read(src.frame_indices, None))
    part = VideoPart([f for _, f in frames], [n for n, _ in frames], src.source_fps, src.total_frames,
                     max_pixels_total=src.max_pixels_total, min_pixels_total=src.min_pixels_total)
    pixels, meta = F.video_pixels(engine.processor, part)
    return F.encode(engine.model, pixels, meta)


def test_the_reader_decodes_stretches_in_parallel_exactly_as_one_thread(video: Path) -> None:
    def read(workers: int) -> list[tuple[int, np.ndarray]]:
        source = MediaFrameSource(video, plan=SamplingPlan(fps=8.0, max_frames=192))
        source.read_workers = workers
        src = source.ingest_input()
        return list(src.read(src.frame_indices, None))

    one, four = read(1), read(4)
    assert len(one) == 192 and [n for n, _ in one] == [n for n, _ in four]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(one, four))
    assert one[0][1].shape == (96, 160, 3)


def _same(a: F.VisualFeatures, b: F.VisualFeatures) -> None:
    assert a.meta == b.meta
    assert torch.equal(a.pooler, b.pooler)
    assert len(a.deepstack) == len(b.deepstack) and all(torch.equal(x, y) for x, y in zip(a.deepstack, b.deepstack))


def test_an_ingest_in_parts_is_exact_against_the_frames_given_whole(engine: LocalEngine, video: Path) -> None:
    memory = engine.feature_memory
    source = MediaFrameSource(video, plan=PLAN)
    seen: list[tuple[float, str]] = []
    done = memory.ingest(KEY, source.ingest_input(), progress=lambda f, m="", s="": seen.append((f, m)))
    assert (done.parts, done.reused, done.encoded) == (6, 0, 6)
    assert done.meta.grid[0] == 12 and len(done.meta.frame_indices) == 24
    assert seen[-1] == (1.0, "part 6 of 6 encoded (6 in all)")
    whole = _whole(engine, video)
    _same(memory.load(KEY), whole)  # held for the next load: the ingest's own tensors
    memory.forget(KEY)
    _same(memory.load(KEY), whole)  # read back from the store: six parts put together
    # an ingest of a stored video encodes nothing
    again = memory.ingest(KEY, source.ingest_input(), keep=False)
    assert (again.reused, again.encoded) == (6, 0)


def test_a_lookup_reads_only_the_manifest(engine: LocalEngine, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = engine.feature_memory
    memory.ingest("clip-lookup", MediaFrameSource(video, plan=PLAN).ingest_input(), keep=False)
    memory.forget("clip-lookup")
    read: list[str] = []
    real = memory.store._get  # every read of the store, as bytes or as a view
    monkeypatch.setattr(memory.store, "_get", lambda key: read.append(key.stage) or real(key))
    meta = memory.lookup("clip-lookup")
    assert meta.grid[0] == 12 and read == [STAGE]
    read.clear()
    memory.load("clip-lookup")
    assert read == [STAGE] + [PART_STAGE] * 6


KILLED = """
import os, sys
from core.analysis.sources import MediaFrameSource
from core.cache import ResultCache
from core.media.sampling import SamplingPlan
from core.settings import Settings
from core.vlm.local import LocalEngine
engine = LocalEngine(Settings(model=sys.argv[1], cache_dir=sys.argv[2] + "-unused"), feature_store=ResultCache(sys.argv[2]))
engine.load()
memory = engine.feature_memory
memory.chunk_groups = 2
def die(fraction, message="", stage=""):
    if message.startswith("part 4 of"):
        os._exit(9)  # killed mid-ingest: no clean-up, no manifest
memory.ingest("clip-killed", MediaFrameSource(sys.argv[3], plan=SamplingPlan(fps=1.0, max_frames=24)).ingest_input(),
              progress=die)
"""


def test_a_killed_ingest_resumes_at_its_last_stored_part(tiny_model_dir: Path, tmp_path: Path, video: Path,
                                                         engine: LocalEngine) -> None:
    folder = tmp_path / "results"
    done = subprocess.run([sys.executable, "-c", KILLED, str(tiny_model_dir), str(folder), str(video)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 9, done.stderr[-2000:]
    cache = ResultCache(folder)
    stages = [e.stage for e in cache.entries()]
    kept = stages.count(PART_STAGE)
    assert STAGE not in stages and 1 <= kept <= 4  # parts stored before it died, no manifest

    resumed = _engine(tiny_model_dir, folder)
    try:
        memory = resumed.feature_memory
        assert memory.lookup("clip-killed") is None  # not complete: not found
        report = memory.ingest("clip-killed", MediaFrameSource(video, plan=PLAN).ingest_input())
        assert (report.parts, report.reused, report.encoded) == (6, kept, 6 - kept)
        _same(memory.load("clip-killed"), _whole(engine, video))
    finally:
        resumed.close()


def test_parts_are_stored_while_the_ingests_own_encoding_holds_the_model(
        tiny_model_dir: Path, tmp_path: Path, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer yields to requests only once the ingest is over: during it, the model's lock is held by the
    ingest's own encodes, and a part must be stored while the next is encoded (or a killed ingest keeps nothing)."""
    from core.vlm import ingest as ingest_module

    e = _engine(tiny_model_dir, tmp_path / "results")
    stored = threading.Event()
    seen: list[bool] = []
    try:
        store = e.feature_memory.store
        put = store.put_bytes
        monkeypatch.setattr(store, "put_bytes", lambda key, blob: (put(key, blob), stored.set())[0])
        real = ingest_module.encode
        calls = [0]

        def encode(model, pixels, meta):
            calls[0] += 1
            if calls[0] == 3:  # the third part's encode holds the model until the first part is stored
                seen.append(stored.wait(5))
            return real(model, pixels, meta)

        monkeypatch.setattr(ingest_module, "encode", encode)
        report = e.feature_memory.ingest("clip-own", MediaFrameSource(video, plan=PLAN).ingest_input(), keep=False)
        assert report.encoded == 6 and seen == [True]
    finally:
        e.close()


def test_a_cancelled_ingest_keeps_its_parts_and_a_damaged_part_is_encoded_again(
        tiny_model_dir: Path, tmp_path: Path, video: Path, engine: LocalEngine) -> None:
    folder = tmp_path / "results"
    e = _engine(tiny_model_dir, folder)
    try:
        memory = e.feature_memory
        cancel = threading.Event()

        def stop_after_two(fraction: float, message: str = "", stage: str = "") -> None:
            if message.startswith("part 2 of"):
                cancel.set()

        with pytest.raises(Cancelled):
            memory.ingest("clip-c", MediaFrameSource(video, plan=PLAN).ingest_input(), stop_after_two, cancel)
        assert memory.lookup("clip-c") is None
        assert [x.stage for x in ResultCache(folder).entries()].count(PART_STAGE) == 2
        report = memory.ingest("clip-c", MediaFrameSource(video, plan=PLAN).ingest_input(), keep=False)
        assert (report.reused, report.encoded) == (2, 4)

        # a part damaged on disk: the load is a reported miss, the next ingest encodes that part again
        cache = ResultCache(folder)
        cache.put_bytes(part_key("clip-c", memory.material, 3, 2), b"not safetensors")
        memory.forget("clip-c")
        with pytest.raises(StoredFeaturesUnreadable, match="could not be used"):
            memory.load("clip-c")
        memory.forget("clip-c")
        report = memory.ingest("clip-c", MediaFrameSource(video, plan=PLAN).ingest_input())
        assert (report.reused, report.encoded) == (5, 1)
        _same(memory.load("clip-c"), _whole(engine, video))
        manifest = json.loads(cache.get_bytes(store_key("clip-c", memory.material)))
        assert (manifest["parts"], manifest["chunk_groups"], manifest["meta"]["grid"][0]) == (6, 2, 12)
    finally:
        e.close()


def test_closing_the_engine_waits_for_the_ingest_to_be_stored(tiny_model_dir: Path, tmp_path: Path,
                                                             video: Path) -> None:
    """Found by a flaky test: the engine closed (a CLI run ending) while the writer still stored the last parts,
    and the manifest was never written. Slow writes make it certain."""
    import time

    from core.vlm import ingest as ingest_module

    folder = tmp_path / "results"
    e = _engine(tiny_model_dir, folder)
    real = ingest_module.to_buffer

    def slow(features):  # type: ignore[no-untyped-def]
        time.sleep(0.2)
        return real(features)

    ingest_module.to_buffer = slow
    try:
        e.feature_memory.ingest("clip-close", MediaFrameSource(video, plan=PLAN).ingest_input())
    finally:
        e.close()
        ingest_module.to_buffer = real
    stages = [x.stage for x in ResultCache(folder).entries()]
    assert stages.count(PART_STAGE) == 6 and STAGE in stages
