"""The video service of the application layer (core/app/video.py), as every front end uses it: one
probe, one plan, one analysis (at once or in the background, resumed from the cache), questions with
the runtime's one engine, and captions + summary as one job with its progress."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.app import Runtime
from core.app.video import analysis_key, is_video, model_precision, model_size
from core.cache import ResultCache, hash_file
from core.jobs import JobRegistry, JobState
from core.media import SamplingPlan, VideoError
from core.settings import Settings
from tests.pages.media import make_video


@pytest.fixture()
def runtime(tmp_path: Path):
    rt = Runtime(Settings(cache_dir=tmp_path / "cache"), cache=ResultCache(tmp_path / "cache"), jobs=JobRegistry())
    yield rt
    rt.cache.close()
    rt.close()


def test_one_rule_says_what_is_a_video(tmp_path: Path) -> None:
    assert is_video("talk.MP4") and is_video("clip.webm") and not is_video("scan.png") and not is_video("doc.pdf")
    mp4_without_suffix = tmp_path / "download"
    mp4_without_suffix.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 16)
    heic = tmp_path / "photo"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 16)
    assert is_video(mp4_without_suffix) and not is_video(heic) and not is_video(tmp_path / "missing")


def test_planner_reads_the_model_size_and_precision() -> None:
    assert model_size("Qwen/Qwen3-VL-8B-Instruct") == ("8b", True)
    assert model_size("/srv/models/my-finetune") == ("4b", False)
    s = Settings(model="Qwen/Qwen3-VL-4B-Instruct-FP8")
    assert model_precision(s, gpu=True) == "fp8" and model_precision(s, gpu=False) == "fp32"
    assert model_precision(Settings(quantization="4bit"), gpu=True) == "4bit"


def test_probe_is_kept_in_the_cache_and_reused(runtime: Runtime, tmp_path: Path, monkeypatch) -> None:
    video = make_video(tmp_path / "v.mp4", seconds=4)
    sha = hash_file(video)
    info = runtime.video.probe(video, sha)
    assert round(info.duration) == 4 and (info.width, info.height) == (320, 180)
    import core.app.video as service

    def no_probe(path):  # a second probe of the same file must come from the cache
        raise AssertionError("probed twice")

    monkeypatch.setattr(service, "probe_video", no_probe)
    assert runtime.video.probe(video, sha).duration == info.duration


def test_plan_of_the_choices_with_its_cost(runtime: Runtime, tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", seconds=6)
    info = runtime.video.probe(video, hash_file(video))
    choice = runtime.video.plan(info, fps=2.0, max_frames=8, window=(2.0, info.duration))
    assert choice.plan.start == 2.0 and choice.plan.end is None and choice.plan.max_frames == 8
    assert choice.estimate.frames == 8 and choice.where == "RAM" and choice.model_size == "4b"
    with pytest.raises(VideoError):
        runtime.video.plan(info, fps=2.0, max_frames=8, window=(5.0, 1.0))


def test_background_analysis_resumes_from_saved_stages(runtime: Runtime, tmp_path: Path) -> None:
    """A second run after a finished stage reads it from the cache (a restart resumes)."""
    video = make_video(tmp_path / "v.mp4", seconds=4)
    sha = hash_file(video)
    plan = SamplingPlan()
    assert runtime.video.cached_analysis(video, sha, ("scenes",), plan) is None
    job = runtime.video.start_analysis(video, sha, ("scenes",), plan, "a")
    assert job.key == analysis_key(sha, ("scenes",), plan)
    assert job.wait(60) and job.state is JobState.DONE, job.error
    assert runtime.video.analysis_job(sha, ("scenes",), plan) is job
    cached = runtime.video.cached_analysis(video, sha, ("scenes",), plan)
    assert cached is not None and cached.from_cache["scenes"] is True
    assert [round(e.start) for e in cached.events if e.kind == "scene"] == [0, 2]  # shots: from 0 s, cut at 2 s
    assert runtime.video.storyboard(sha), "pictures along the video are saved after the analysis"
    again = runtime.video.start_analysis(video, sha, ("scenes", "motion"), plan, "b")
    assert again.wait(60) and again.result.from_cache["scenes"] is True and again.result.from_cache["motion"] is False
    messages = " ".join(again.snapshot().log)
    assert "video.scenes" not in messages and "motion:" in messages  # plain stage words, no internal names


def test_questions_use_the_runtimes_one_engine_and_answers_are_kept(tiny_model_dir: Path, tmp_path: Path,
                                                                     monkeypatch) -> None:
    import core.vlm as vlm
    from core.vlm.types import GenerationParams

    made: list[object] = []
    real = vlm.create_engine
    monkeypatch.setattr(vlm, "create_engine", lambda s: made.append(s) or real(s))
    rt = Runtime(Settings(model=str(tiny_model_dir), cache_dir=tmp_path / "cache"),
                 cache=ResultCache(tmp_path / "cache"), jobs=JobRegistry())
    try:
        video = make_video(tmp_path / "v.mp4", seconds=4)
        sha = hash_file(video)
        plan = SamplingPlan(fps=1.0, max_frames=4)
        greedy = GenerationParams(max_new_tokens=8, temperature=0.0)
        first = rt.video.ask(video, "What happens at 0:02?", greedy, plan, sha, refine=False)
        second = rt.video.ask(video, "What happens at 0:02?", greedy, plan, sha, refine=False)
        assert first.text == second.text and first.text
        assert len(made) == 1, "one engine for every question"
        stored = [e for e in rt.cache.entries(sha) if e.stage == "video.answers"]
        assert len(stored) == 1
        # the runtime's engine keeps the video's visual features in the runtime's cache (encode once, ask forever)
        assert rt.engine.feature_store is rt.cache
        rt.engine.feature_memory.wait()  # stored in the background, off the first answer's path
        assert any(e.stage == "vlm-features" for e in rt.cache.entries(sha))
    finally:
        rt.cache.close()
        rt.close()


def test_summary_job_reports_progress_by_part(runtime: Runtime, tmp_path: Path, monkeypatch) -> None:
    """Captions then chapters, one job; a one-chunk video moves past 0% (its parts report progress)."""
    import core.analysis.summary as summary
    from core.analysis.chapters import Chapter, VideoSummary
    from core.analysis.summary import CaptionOptions, Captions
    from core.events import Event

    def fake_captions(engine, source, cache=None, options=None, progress=None, cancel=None, input_hash=None):
        progress(1.0, "1 of 1 chunks done")
        return Captions(chunks=[], events=[Event("caption", 0.0, 2.0, "a red square")])

    def fake_summary(engine, duration, events, cache=None, input_hash=None, max_new_tokens=512, progress=None,
                     cancel=None, block_events=40):
        progress(1.0, "1 chapters")
        return VideoSummary(duration=duration, model="m", summary="a square", chapters=[Chapter(0.0, 4.0, "Intro")])

    # the model's part is replaced (the engine is not what this test is about); the job wiring is real
    monkeypatch.setattr(summary, "caption_video", fake_captions)
    monkeypatch.setattr(summary, "summarize_video", fake_summary)
    monkeypatch.setattr(Runtime, "engine", property(lambda self: object()))
    video = make_video(tmp_path / "v.mp4", seconds=4)
    sha = hash_file(video)
    info = runtime.video.probe(video, sha)
    job = runtime.video.start_summary(video, sha, info, CaptionOptions(chunk_s=60), 64, [], "s")
    assert job.wait(30) and job.state is JobState.DONE, job.error
    result = job.result
    assert result.summary.summary == "a square" and [e.kind for e in result.events] == ["caption", "chapter"]
    snap = job.snapshot()
    assert snap.fraction == 1.0 and snap.stage == "chapters"
    assert any("1 of 1 chunks done" in m for m in snap.log)


def test_out_of_memory_moves_kept_prefixes_off_the_gpu_then_lowers_the_plan_once(runtime: Runtime, tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """Out of GPU memory cannot be made on this CPU: the engine's OutOfMemory is raised by a stand-in for the
    model's answer; the service's reaction (free the kept prefixes, then one step down the plan) is real."""
    from core.analysis.qa import AnswerResult, VideoQA
    from core.vlm.base import OutOfMemory

    video = make_video(tmp_path / "v.mp4", seconds=6)
    sha = hash_file(video)
    info = runtime.video.probe(video, sha)
    plan = runtime.video.plan(info, fps=2.0, max_frames=12).plan
    released: list[int] = []

    class Store:
        def release_device(self) -> int:
            released.append(1)
            return 1

    class Engine:
        prefixes = Store()

    monkeypatch.setattr(Runtime, "engine", property(lambda self: Engine()))
    frames_tried: list[int] = []

    def stream_answer(self, question, params=None, history=None, refine=True):
        frames_tried.append(self.source.plan.max_frames)
        if len(frames_tried) < 3:
            raise OutOfMemory("test")
        self.last_result = AnswerResult(question, "a red square")
        yield "a red square"

    monkeypatch.setattr(VideoQA, "stream_answer", stream_answer)
    qa = runtime.video.questions(video, plan, sha, info)
    assert "".join(runtime.video.stream_ask(qa, "what is shown?")) == "a red square"
    assert released == [1] and frames_tried[:2] == [12, 12] and frames_tried[2] < 12
    assert qa.last_result.warnings[0].startswith("The GPU ran out of memory: the kept video prefixes were moved")
    assert f"lowered to {frames_tried[2]} frames" in qa.last_result.warnings[1]


def test_the_plan_a_video_was_asked_with_is_kept_while_it_fits(runtime: Runtime, tmp_path: Path,
                                                                monkeypatch) -> None:
    """Free memory moves between processes: once a video's features are stored for a plan, the default plan must
    not move with the memory, or a restarted process would miss them (another plan is another content key)."""
    import core.media.budget as budget

    video = make_video(tmp_path / "v.mp4", seconds=60)
    sha = hash_file(video)
    info = runtime.video.probe(video, sha)

    def ram(gib: float) -> None:
        monkeypatch.setattr(budget, "_available_ram", lambda: (int(gib * 1024**3), 1024 * 1024**3))

    ram(20)  # tight: a small plan is the best that fits
    small = runtime.video.default_plan(info, input_hash=sha)
    assert small.estimate.frames == 16
    ram(512)  # nothing stored for it yet: the best plan for the memory free now
    assert runtime.video.default_plan(info, input_hash=sha).estimate.frames == 120
    runtime.video.keep_plan(sha, info, small.plan)  # what an ingest or an answer does once its features are stored
    again = runtime.video.default_plan(info, window=(0.0, info.duration), input_hash=sha)
    assert again.plan == small.plan and again.automatic
    assert again.reasons == [f"The plan this video was asked about before, {again.estimate.describe()}, still "
                             "fits: kept, so its stored visual features and analyses are used."]
    assert runtime.video.default_plan(info).estimate.frames == 120  # without the video's hash: the best for now
    assert runtime.video.questions(video, None, sha, info).source.plan == small.plan  # questions ask with it
