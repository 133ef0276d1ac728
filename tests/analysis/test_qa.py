"""Time-aware video Q&A on the tiny model: windows, answer events, flags, follow-up reuse."""

from __future__ import annotations

import numpy as np
import pytest

from core.analysis.qa import Clip, VideoQA, answer_events, flag_time, merge_clips
from core.vlm import GenerationParams

GREEDY = GenerationParams.greedy_defaults


class ArraySource:
    """Frames of a synthetic 60 s, 10 fps video held in memory: frame i shows brightness i % 256."""

    def __init__(self, seconds: float = 60.0, fps: float = 10.0) -> None:
        self.fps, self.total = fps, int(seconds * fps)
        self.windows: list[tuple[float, float, float]] = []

    def _frame(self, i: int) -> np.ndarray:
        return np.full((64, 64, 3), i % 256, dtype=np.uint8)

    def duration(self) -> float:
        return self.total / self.fps

    def content_key(self) -> str:
        return "array-video/plan-1"

    def overview(self) -> Clip:
        idx = list(range(0, self.total, 20))  # 0.5 fps
        return Clip([self._frame(i) for i in idx], idx, self.fps, self.total)

    def window(self, start: float, end: float, fps: float, like: Clip | None = None) -> Clip:
        self.windows.append((start, end, fps))
        step = max(1, int(round(self.fps / fps)))
        idx = list(range(int(start * self.fps), min(self.total, int(end * self.fps) + 1), step))
        if len(idx) % 2:
            idx = idx[:-1]
        return Clip([self._frame(i) for i in idx], idx, self.fps, self.total)


def test_time_question_samples_a_dense_window(tiny_engine) -> None:
    source = ArraySource()
    qa = VideoQA(tiny_engine, source)
    result = qa.ask("What happens at 0:30?", GREEDY(8))
    assert result.time_reference == (30.0, 30.0)
    assert result.dense_windows[0] == (20.0, 40.0)
    assert source.windows[0][2] >= 2.0  # at least 2 fps around the time asked
    assert result.frames_seen > len(source.overview().indices)
    assert isinstance(result.text, str)


def test_chinese_time_question(tiny_engine) -> None:
    source = ArraySource(seconds=600, fps=2)
    result = VideoQA(tiny_engine, source).ask("第3分15秒发生了什么", GREEDY(4))
    assert result.time_reference == (195.0, 195.0) and result.dense_windows[0] == (185.0, 205.0)


def test_follow_up_reuses_the_overview(tiny_engine) -> None:
    qa = VideoQA(tiny_engine, ArraySource())
    first = qa.ask("When does the door close?", GREEDY(6), refine=False)
    second = qa.ask("What colour is the car?", GREEDY(6), refine=False)
    assert not first.reused_prefix and second.reused_prefix
    assert not second.events or all(e.kind == "answer" for e in second.events)


def test_noise_answer_gives_a_clear_no_time_message(tiny_engine) -> None:
    result = VideoQA(tiny_engine, ArraySource()).ask("Describe the video", GREEDY(6))
    if not result.events:
        assert result.warnings == ["The answer names no time in the video."]


def test_answer_events_and_flags() -> None:
    text = "The door opens at 0:12. It closes at 00:45. A dog appears at 9:59, and again from 0:20 to 0:25."
    seen = [float(t) for t in range(0, 60, 2)]
    events = answer_events(text, "when?", duration=60.0, seen=seen)
    assert [(e.start, e.end) for e in events] == [(12, 12), (45, 45), (599, 599), (20, 25)]
    assert [e.detail["flag"] is None for e in events] == [True, True, False, True]
    assert "outside the video" in events[2].detail["flag"]
    assert events[0].label == "The door opens at 0:12"
    assert flag_time(30, 60, [0.0, 1.0, 2.0]) .startswith("not among the frames")


def test_merge_clips_keeps_dense_frames_and_budget() -> None:
    a = Clip(list(range(100)), list(range(0, 1000, 10)), 10.0, 1000)
    b = Clip(["b"] * 10, list(range(500, 520, 2)), 10.0, 1000)
    m = merge_clips(a, b, max_frames=40)
    assert len(m.indices) <= 40 and m.indices == sorted(m.indices)
    assert set(range(500, 520, 2)) <= set(m.indices)
    assert len(m.indices) % 2 == 0


@pytest.mark.parametrize("refine", [True, False])
def test_refine_switch_runs(tiny_engine, refine: bool) -> None:
    result = VideoQA(tiny_engine, ArraySource()).ask("When does the door close?", GREEDY(6), refine=refine)
    if not refine:
        assert result.refined is False


class ScriptedEngine:
    """Stands in for a real Qwen3-VL's *answers* (the tiny model's text is noise); records what it was shown."""

    def __init__(self, answers: list[str]) -> None:
        from core.vlm.base import Ledger

        self.answers = answers
        self.seen: list[list[float]] = []
        self.ledger = Ledger()

    def _clip_times(self, messages) -> list[float]:
        from core.vlm.types import VideoPart

        for m in messages:
            for p in m.parts():
                if isinstance(p, VideoPart):
                    return p.timestamps
        return []

    def stream(self, messages, params=None, kind="chat"):
        from core.vlm.base import TextStream
        from core.vlm.types import GenerationResult

        self.seen.append(self._clip_times(messages))
        text = self.answers.pop(0)
        result = GenerationResult(text=text, prompt_tokens=1, completion_tokens=1, finish_reason="stop")
        return TextStream(iter([text]), lambda: None, lambda: result)

    def generate(self, messages, params=None, kind="chat"):
        return self.stream(messages, params, kind).collect()


def test_coarse_to_fine_refines_named_times() -> None:
    engine = ScriptedEngine(["The door closes at 0:40.", "00:37"])
    result = VideoQA(engine, ArraySource(), refine_fps=4.0, refine_radius=6.0).ask("When does the door close?")
    assert result.refined
    event = result.events[0]
    assert (event.start, event.detail["coarse"]) == (37.0, [40.0, 40.0])
    assert result.dense_windows == [(34.0, 46.0)]
    fine = engine.seen[1]
    assert fine[0] >= 34.0 and fine[-1] <= 46.0 and fine[1] - fine[0] == pytest.approx(0.2)  # 4 fps of 10 fps source


def test_refine_ignores_answers_outside_the_window() -> None:
    engine = ScriptedEngine(["It happens at 0:40.", "at 5:00"])
    result = VideoQA(engine, ArraySource()).ask("When?")
    assert not result.refined and result.events[0].start == 40.0
