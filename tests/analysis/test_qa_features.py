"""Video Q&A on a real file with the visual memory: the overview, dense stretches and refine windows are encoded
once and kept beside the video in the result cache; later questions (another process, a restarted engine) decode
no frame and skip the vision tower, and answer as a fresh encode does."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.analysis import qa as qa_module
from core.analysis import sources as sources_module
from core.analysis.qa import AnswerResult, VideoQA, answer_events
from core.analysis.sources import MediaFrameSource
from core.cache import ResultCache, hash_file
from core.media.sampling import SamplingPlan
from core.settings import Settings
from core.vlm import GenerationParams
from core.vlm.local import LocalEngine
from tests.square_video import write_square_video

GREEDY = GenerationParams.greedy_defaults
ROOT = Path(__file__).resolve().parents[2]
PLAN = SamplingPlan(fps=1.0, max_frames=64)
QUESTION = "What does the square do?"


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 s at 10 fps, 160x96: a white square crossing a background whose colour changes every second."""
    return write_square_video(tmp_path_factory.mktemp("video") / "square.mp4", 400, 6, 4)


def _engine(model: Path, folder: Path | None) -> LocalEngine:
    e = LocalEngine(Settings(model=str(model), cache_dir=model.parent / "unused-cache"),
                    feature_store=ResultCache(folder) if folder is not None else None)
    e.load()
    return e


def _qa(engine: LocalEngine, video: Path) -> VideoQA:
    return VideoQA(engine, MediaFrameSource(video, plan=PLAN), max_frames=PLAN.max_frames)


@pytest.fixture(scope="module")
def fresh(tiny_model_dir: Path) -> LocalEngine:
    """No feature store: every answer decodes and encodes the frames (today's path)."""
    e = _engine(tiny_model_dir, None)
    yield e
    e.close()


@pytest.fixture
def no_decoding_no_vision_tower(monkeypatch: pytest.MonkeyPatch):
    """A function that, called with an engine, forgets the decoded overviews and makes the frame decoder and that
    engine's vision tower refuse to run."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("frames were decoded or the vision tower ran")

    def arm(engine: LocalEngine) -> None:
        monkeypatch.setattr(qa_module, "_OVERVIEWS", qa_module._ClipCache())
        monkeypatch.setattr(sources_module, "sample_video", refuse)
        monkeypatch.setattr(engine.model.model.visual, "forward", refuse)

    return arm


SUBPROCESS = """
import json, sys
from core.analysis.qa import VideoQA
from core.analysis.sources import MediaFrameSource
from core.cache import ResultCache
from core.media.sampling import SamplingPlan
from core.settings import Settings
from core.vlm import GenerationParams
from core.vlm.local import LocalEngine
engine = LocalEngine(Settings(model=sys.argv[1], cache_dir=sys.argv[2] + "-unused"), feature_store=ResultCache(sys.argv[2]))
qa = VideoQA(engine, MediaFrameSource(sys.argv[3], plan=SamplingPlan(fps=1.0, max_frames=64)), max_frames=64)
r = qa.ask(sys.argv[4], GenerationParams.greedy_defaults(12), refine=False)
print(json.dumps({"text": r.text, "frames_seen": r.frames_seen, "stored_features": r.stored_features}))
"""


def test_a_question_in_another_process_stores_features_the_next_one_decodes_nothing(
        tiny_model_dir: Path, tmp_path: Path, video: Path, fresh: LocalEngine, no_decoding_no_vision_tower) -> None:
    expected = _qa(fresh, video).ask(QUESTION, GREEDY(12), refine=False)
    folder = tmp_path / "results"
    done = subprocess.run([sys.executable, "-c", SUBPROCESS, str(tiny_model_dir), str(folder), str(video), QUESTION],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    first = json.loads(done.stdout.strip().splitlines()[-1])
    # the first question ingests the video (decoded, encoded and stored part by part), then asks from the store:
    # the same greedy answer as the frames given whole to an engine without a store
    assert first == {"text": expected.text, "frames_seen": expected.frames_seen, "stored_features": True}
    cache = ResultCache(folder)
    assert [(e.input_hash, e.stage) for e in cache.entries() if e.stage == "vlm-features"] == [
        (hash_file(video), "vlm-features")]

    engine = _engine(tiny_model_dir, folder)  # a restart: nothing in memory, everything in the cache
    try:
        no_decoding_no_vision_tower(engine)
        got = _qa(engine, video).ask(QUESTION, GREEDY(12), refine=False)
        tok = engine.processor.tokenizer
        assert tok(got.text)["input_ids"] == tok(expected.text)["input_ids"]
        assert (got.text, got.frames_seen, got.stored_features) == (expected.text, expected.frames_seen, True)
        assert not [w for w in got.warnings if "features" in w]
    finally:
        engine.close()


def _damage(folder: Path) -> None:
    """Cut every stored feature entry in half, where the disk cache keeps it (a value file or the row)."""
    with sqlite3.connect(folder / "cache.db") as db:
        rows = db.execute("SELECT key, filename, value FROM Cache WHERE key LIKE '%/vlm-features/%'").fetchall()
        assert rows
        for key, filename, value in rows:
            if filename:
                path = folder / filename
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            else:
                db.execute("UPDATE Cache SET value = ? WHERE key = ?", (bytes(value)[: len(value) // 2], key))


def test_damaged_features_are_reported_in_the_answer_and_computed_again(
        tiny_model_dir: Path, tmp_path: Path, video: Path, fresh: LocalEngine) -> None:
    expected = _qa(fresh, video).ask(QUESTION, GREEDY(10), refine=False)
    folder = tmp_path / "results"
    first = _engine(tiny_model_dir, folder)
    _qa(first, video).ask(QUESTION, GREEDY(2), refine=False)
    first.close()
    _damage(folder)

    engine = _engine(tiny_model_dir, folder)
    try:
        got = _qa(engine, video).ask(QUESTION, GREEDY(10), refine=False)
        assert got.text == expected.text  # ingested again (the damaged parts encoded anew)
        assert [w for w in got.warnings if "visual features" in w] == [
            "The stored visual features of this video could not be used (the result cache could not read the entry "
            "back (damaged on disk)); they were computed again from the video's frames."]
    finally:
        engine.close()
    again = _engine(tiny_model_dir, folder)  # computed again and stored: the next restart reads them
    try:
        qa = _qa(again, video)
        assert qa.ask(QUESTION, GREEDY(10), refine=False).stored_features
        # damaged while this engine knows them (and its kept KV is gone): found out when asking, then recomputed
        _damage(folder)
        again.prefixes.clear()
        late = qa.ask(QUESTION, GREEDY(10), refine=False)
        assert late.text == expected.text
        assert [w for w in late.warnings if "visual features" in w] == [
            "The stored visual features of this video could not be used (the result cache could not read the entry "
            "back (damaged on disk)); they were computed again from the video's frames."]
        assert qa.ask("And then?", GREEDY(4), refine=False).reused_prefix
    finally:
        again.close()


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every clip VideoQA turns into a VideoPart, in order."""
    clips: list = []
    real = qa_module.clip_part

    def noting(clip, cache_key=None):  # type: ignore[no-untyped-def]
        clips.append(clip)
        return real(clip, cache_key)

    monkeypatch.setattr(qa_module, "clip_part", noting)
    return clips


def test_a_time_question_is_answered_from_stored_overview_and_stretch(
        tiny_model_dir: Path, tmp_path: Path, video: Path, asked: list, no_decoding_no_vision_tower) -> None:
    question = "What happens at 0:25?"
    folder = tmp_path / "results"
    first_engine = _engine(tiny_model_dir, folder)
    first = _qa(first_engine, video).ask(question, GREEDY(10))
    first_engine.close()
    assert first.dense_windows == [(15.0, 35.0)] and first.time_reference == (25.0, 25.0)
    mixed = [c for c in asked if len(c.features_from) == 2]
    assert len(mixed) == 1 and not mixed[0].frames and first.frames_seen == len(mixed[0].indices)
    # the overview is ingested (no clip made of it): its frame numbers come from the stored plan
    reader = _engine(tiny_model_dir, folder)
    overview = reader.feature_memory.lookup(f"{hash_file(video)}:{_qa(reader, video).source.plan_digest()}").frame_indices
    reader.close()
    stretch = asked[0].indices  # encoded on the way: the stretch at 2 fps
    assert len(overview) == 40 and stretch[0] == 150 and stretch[-1] == 350 and len(stretch) == 40
    pairs = [tuple(overview[k:k + 2]) for k in range(0, 40, 2)]
    outside = [i for p in pairs if p[1] < 150 or p[0] > 350 for i in p]
    assert mixed[0].indices == outside[:14] + stretch + outside[14:]  # whole pairs, in time order
    stages = [e.stage for e in ResultCache(folder).entries(hash_file(video)) if e.stage == "vlm-features"]
    assert stages == ["vlm-features", "vlm-features"]  # the overview and the stretch, beside each other

    engine = _engine(tiny_model_dir, folder)
    try:
        no_decoding_no_vision_tower(engine)
        got = _qa(engine, video).ask(question, GREEDY(10))
        assert (got.text, got.frames_seen, got.stored_features) == (first.text, first.frames_seen, True)
        assert asked[-1].indices == mixed[0].indices
    finally:
        engine.close()


def test_a_refine_window_is_encoded_once_and_kept_beside_the_overview(
        tiny_model_dir: Path, tmp_path: Path, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "results"
    engine = _engine(tiny_model_dir, folder)
    try:
        qa = _qa(engine, video)
        qa.ask(QUESTION, GREEDY(2), refine=False)  # the overview, stored
        memory = engine.feature_memory
        overview = qa._overview(memory, AnswerResult(QUESTION, ""))
        assert overview.features_from and not overview.frames

        def refine_once() -> AnswerResult:
            result = AnswerResult(QUESTION, "It moves at 0:12.")
            result.events = answer_events(result.text, QUESTION, 40.0, overview.times)
            qa._refine(result, overview, 40.0, None, memory)
            return result

        calls: list[int] = []
        real = engine.model.model.visual.forward
        monkeypatch.setattr(engine.model.model.visual, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
        first = refine_once()
        assert first.dense_windows == [(6.0, 18.0)] and calls  # encoded once
        stages = [e.stage for e in ResultCache(folder).entries(hash_file(video)) if e.stage == "vlm-features"]
        assert stages == ["vlm-features", "vlm-features"]
        calls.clear()
        engine.prefixes.clear()  # not the kept KV: the stored features are what spares the vision tower
        second = refine_once()
        assert calls == [] and second.dense_windows == first.dense_windows
        assert [e.start for e in second.events] == [e.start for e in first.events]
        # forgetting the video forgets its features: the two manifests and their parts
        assert ResultCache(folder).delete_input(hash_file(video)) == 4
        assert ResultCache(folder).entries(hash_file(video)) == []
    finally:
        engine.close()
