"""Dense captions and chapters: the whole chain on the tiny model and a real video file, plus parsing."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.events import Event
from core.analysis.qa import VideoQA
from core.analysis.sources import MediaFrameSource
from core.analysis.summary import CaptionOptions, caption_video, chunk_windows, merge_overlaps, summarize_video
from core.cache import ResultCache
from core.media.errors import Cancelled
from core.media.sampling import SamplingPlan
from core.vlm import GenerationParams


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 40 s, 10 fps, 160x96 video: a white square moves right; the background changes colour every 10 s."""
    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 96))
    for i in range(400):
        frame = np.zeros((96, 160, 3), np.uint8)
        frame[:] = [(60, 0, 0), (0, 60, 0), (0, 0, 60), (60, 60, 0)][i // 100]
        x = (i * 2) % 140
        frame[30:50, x:x + 20] = 255
        writer.write(frame)
    writer.release()
    return path


def test_chunk_windows() -> None:
    assert chunk_windows(150, 60, 5) == [(0, 60), (55, 115), (110, 150)]
    assert chunk_windows(40, 60, 5) == [(0, 40)]
    assert chunk_windows(118, 60, 5) == [(0, 60), (55, 118)]  # a 3 s tail is folded into the last chunk
    assert chunk_windows(0, 60, 5) == []


def test_merge_overlaps() -> None:
    a = Event("vlm", 56, 58, "A car passes")
    b = Event("vlm", 57, 59, "a car passes")
    c = Event("vlm", 70, 75, "The door closes")
    merged = merge_overlaps([c, b, a])
    assert [(e.start, e.end, e.label) for e in merged] == [(56, 59, "A car passes"), (70, 75, "The door closes")]


def test_captions_on_the_tiny_model_resume_from_cache(tiny_engine, video: Path, tmp_path: Path) -> None:
    source = MediaFrameSource(video, SamplingPlan(fps=1.0, max_frames=16))
    assert source.duration() == pytest.approx(40.0, abs=0.2)
    cache = ResultCache(tmp_path / "cache")
    options = CaptionOptions(chunk_s=20, overlap_s=2, fps=1.0, max_new_tokens=24)
    seen: list[tuple[float, str]] = []
    caps = caption_video(tiny_engine, source, cache, options, progress=lambda f, m: seen.append((f, m)))
    assert [(c.start, c.end) for c in caps.chunks] == [(0, 20), (18, 40)]
    assert seen[-1][0] == 1.0
    # the tiny model's text is noise: no events, a clear message, never a crash
    if not caps.events:
        assert caps.message.startswith("No events found")
        assert all(c.problems for c in caps.chunks)
    calls = len(tiny_engine.ledger.records())
    again = caption_video(tiny_engine, source, cache, options)
    assert len(tiny_engine.ledger.records()) == calls  # every chunk came from the cache
    assert [c.problems for c in again.chunks] == [c.problems for c in caps.chunks]
    cache.close()


def test_cancel_keeps_finished_chunks(tiny_engine, video: Path, tmp_path: Path) -> None:
    source = MediaFrameSource(video, SamplingPlan(fps=1.0, max_frames=16))
    cache = ResultCache(tmp_path / "cache")
    options = CaptionOptions(chunk_s=15, overlap_s=0, fps=1.0, max_new_tokens=8)
    cancel = threading.Event()

    def progress(fraction: float, message: str) -> None:
        if "1 of" in message:
            cancel.set()  # the user presses Cancel after the first chunk

    with pytest.raises(Cancelled, match="finished chunks are saved"):
        caption_video(tiny_engine, source, cache, options, progress=progress, cancel=cancel)
    assert sum(1 for e in cache.entries() if e.stage == "captions") == 1
    before = len(tiny_engine.ledger.records())
    caption_video(tiny_engine, source, cache, options)  # resumes: only the 2 missing chunks run
    new = tiny_engine.ledger.records()[before:]
    assert sum(1 for r in new if r.kind == "captions") == 2  # (plus a retry each when the answer is unusable)
    cache.close()


def test_video_qa_on_a_real_file(tiny_engine, video: Path) -> None:
    source = MediaFrameSource(video, SamplingPlan(fps=0.5, max_frames=16))
    qa = VideoQA(tiny_engine, source)
    result = qa.ask("What happens at 0:25?", GenerationParams.greedy_defaults(6))
    assert result.time_reference == (25.0, 25.0) and result.dense_windows == [(15.0, 35.0)]
    assert result.frames_seen > len(source.overview().indices)
    follow = qa.ask("And the colour?", GenerationParams.greedy_defaults(6), refine=False)
    assert follow.reused_prefix is False  # the first question mixed in dense frames: nothing kept yet
    third = qa.ask("Describe it", GenerationParams.greedy_defaults(6), refine=False)
    assert third.reused_prefix is True


class ScriptedEngine:
    """Realistic model answers (the tiny model's are noise); everything else is the real code path."""

    def __init__(self, answers: list[str]) -> None:
        from core.vlm.base import Ledger

        self.answers, self.prompts, self.ledger = answers, [], Ledger()

    def info(self):
        from core.vlm.base import EngineInfo

        return EngineInfo(backend="scripted", model="scripted", loaded=True)

    def generate(self, messages, params=None, kind="chat"):
        from core.vlm.types import GenerationResult

        self.prompts.append(messages[-1].parts()[-1].text)
        return GenerationResult(text=self.answers.pop(0), prompt_tokens=1, completion_tokens=1, finish_reason="stop")


def test_chapters_map_reduce(tmp_path: Path) -> None:
    events = [Event("vlm", t, t + 5, f"event {t}") for t in range(0, 600, 20)] + [Event("text", 100, 130, "TITLE CARD")]
    block1 = json.dumps([{"start": 0, "end": 300, "title": "Arrival", "summary": "People arrive."}])
    block2 = "```json\n" + json.dumps([{"start": 300, "end": 600, "title": "Work", "summary": "They work."}]) + "\n```"
    final = json.dumps({"chapters": [{"start": 0, "end": 290, "title": "Arrival", "summary": "People arrive."},
                                     {"start": 290, "end": 600, "title": "The work", "summary": "They work."}],
                        "summary": "People arrive and work."})
    engine = ScriptedEngine([block1, block2, final])
    cache = ResultCache(tmp_path / "c")
    summary = summarize_video(engine, 600.0, events, cache=cache, input_hash="f" * 64, block_events=16)
    assert [(c.start, c.end, c.title) for c in summary.chapters] == [(0, 290, "Arrival"), (290, 600, "The work")]
    assert summary.summary == "People arrive and work."
    assert "TITLE CARD" in engine.prompts[0]  # on-screen text feeds the map step
    again = summarize_video(ScriptedEngine([]), 600.0, events, cache=cache, input_hash="f" * 64, block_events=16)
    assert again.chapters == summary.chapters  # cached: no model call
    cache.close()


def test_unusable_reduce_keeps_block_chapters() -> None:
    events = [Event("vlm", 10, 20, "a"), Event("vlm", 200, 210, "b")]
    engine = ScriptedEngine([json.dumps([{"start": 0, "end": 100, "title": "One"},
                                         {"start": 100, "end": 300, "title": "Two"}]), "I cannot do that."])
    summary = summarize_video(engine, 300.0, events)
    assert [c.title for c in summary.chapters] == ["One", "Two"]
    assert any("merge" in p for p in summary.problems)


def test_chapters_without_captions_explain() -> None:
    summary = summarize_video(ScriptedEngine([]), 100.0, [Event("scene", 0, 50, "shot 1")])
    assert summary.chapters == [] and summary.problems[0].startswith("No captions")


def test_chapters_on_the_tiny_model_do_not_crash(tiny_engine) -> None:
    events = [Event("vlm", 5, 9, "a person opens the door"), Event("vlm", 30, 35, "a car leaves")]
    summary = summarize_video(tiny_engine, 60.0, events, max_new_tokens=24)
    assert summary.chapters == [] or all(0 <= c.start <= c.end <= 60 for c in summary.chapters)
    if not summary.chapters:
        assert summary.problems[0].startswith("No chapters found")
