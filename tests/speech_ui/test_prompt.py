"""Speech in what the model is asked: a question about a video gets the speech around the times it concerns
("Heard around m:ss-m:ss: ...") beside the frames, within a token budget; captions and chapters get the speech
too; the answer's sources say what was seen and what was heard. Real parts: an espeak-ng video transcribed by
PocketSphinx through core/app, the tiny Qwen3-VL answering; a recorder keeps the messages the model got."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.analysis.heard import HEARD, SEEN, evidence_words, heard_context, heard_line, mark_sources, mmss
from core.app.runtime import Runtime
from core.cache import hash_file
from core.events import Event
from core.jobs.registry import JobRegistry
from core.media.sampling import SamplingPlan
from core.settings import Settings
from core.speech.types import Segment, Transcript
from core.vlm import GenerationParams

from tests.speech_ui.conftest import transcribe_into

GREEDY = GenerationParams(max_new_tokens=4, temperature=0.0)
PLAN = SamplingPlan(fps=1.0, max_frames=12)


class Recorder:
    """The tiny engine, keeping (kind, messages) of every request it is given."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls: list[tuple[str, Any]] = []

    def stream(self, messages, params=None, kind="chat"):
        self.calls.append((kind, messages))
        return self.engine.stream(messages, params, kind=kind)

    def generate(self, messages, params=None, kind="chat"):
        self.calls.append((kind, messages))
        return self.engine.generate(messages, params, kind=kind)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def prompts(self, kind: str) -> list[str]:
        """The text the model got in the last user message of each request of `kind`."""
        out = []
        for k, messages in self.calls:
            if k == kind:
                last = [m for m in messages if m.role == "user"][-1]
                out.append("\n".join(p.text for p in last.parts() if getattr(p, "type", "") == "text"))
        return out


@pytest.fixture
def runtime(tmp_path: Path, tiny_model_dir: Path, tiny_engine, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    rt = Runtime(Settings(model=str(tiny_model_dir), cache_dir=tmp_path / "cache", speech_engine="pocketsphinx"),
                 engine=Recorder(tiny_engine), jobs=JobRegistry())
    yield rt
    rt.close()


def _segment_near(transcript: Transcript, t: float) -> Segment:
    return min(transcript.segments, key=lambda s: abs(s.start - t))


def test_a_question_naming_times_gets_the_speech_heard_then_and_sources_say_seen_or_heard(runtime, speech_video):
    sha = hash_file(speech_video.path)
    heard = transcribe_into(runtime.settings.cache_dir, speech_video.path, sha)
    first, second = _segment_near(heard, 1.0), _segment_near(heard, 6.0)
    assert first.start == pytest.approx(1.0, abs=0.5) and second.start == pytest.approx(6.0, abs=0.5)
    assert "morning" in first.text and "presentation" in second.text

    question = "What does she say between 0:06 and 0:10?"
    result = runtime.video.ask(speech_video.path, question, GREEDY, plan=PLAN, input_hash=sha, refine=False)
    [prompt] = runtime.engine.prompts("video-qa")
    line = f"Heard around {mmss(second.start)}-{mmss(second.end)}: {second.text}"
    assert line == heard_line(second.start, second.end, second.text) and line.startswith("Heard around 0:06-0:0")
    assert prompt.splitlines()[1] == line  # under the header, before the question
    assert "morning" not in prompt  # said at 0:01-0:03: outside the stretch asked about
    assert prompt.rstrip().splitlines()[-2] == question
    assert result.heard == [{"start": second.start, "end": second.end, "text": second.text}]
    kinds = [(s["evidence"], s["what"]) for s in result.sources]
    assert kinds == [(SEEN, "frames"), (HEARD, "speech")]
    assert result.sources[0]["count"] == result.frames_seen > 0
    assert result.to_dict()["evidence"] in ("seen", "seen and heard")

    # no time named: the whole transcript fits the budget, in time order
    runtime.video.ask(speech_video.path, "What is the talk about?", GREEDY, plan=PLAN, input_hash=sha, refine=False)
    prompt = runtime.engine.prompts("video-qa")[-1]
    lines = [ln for ln in prompt.splitlines() if ln.startswith("Heard around ")]
    assert lines == [heard_line(s.start, s.end, s.text) for s in heard.segments]


def test_without_a_transcript_the_prompt_is_the_question_alone(runtime, speech_video):
    question = "What does she say at 0:07?"
    result = runtime.video.ask(speech_video.path, question, GREEDY, plan=PLAN,
                               input_hash=hash_file(speech_video.path), refine=False)
    assert runtime.engine.prompts("video-qa") == [question]
    assert result.heard == [] and result.sources == [] and result.evidence == ""


def test_captions_and_chapters_are_asked_with_the_speech(runtime, speech_video):
    from core.analysis.summary import CaptionOptions

    sha = hash_file(speech_video.path)
    heard = transcribe_into(runtime.settings.cache_dir, speech_video.path, sha)
    options = CaptionOptions(chunk_s=60, overlap_s=5, fps=1.0, max_new_tokens=6)
    runtime.video.captions(speech_video.path, options, sha)
    [caption_prompt] = runtime.engine.prompts("captions")[:1]
    assert [ln for ln in caption_prompt.splitlines() if ln.startswith("Heard around ")] == \
        [heard_line(s.start, s.end, s.text) for s in heard.segments]
    assert "describe that too" in caption_prompt

    runtime.video.summarise(speech_video.seconds, [], sha, max_new_tokens=6)
    [chapters_prompt] = runtime.engine.prompts("chapters-map")
    # what is said is what the chapters are made from (no caption held an event): the speech of up to a minute
    # joined into one line with its times
    from core.analysis.timeparse import format_timestamp

    said = " ".join(s.text for s in heard.segments)
    stretch = f"[{format_timestamp(heard.segments[0].start)}-{format_timestamp(heard.segments[-1].end)}]"
    assert stretch.startswith("[00:01-00:") and f"{stretch} (speech) {said}" in chapters_prompt.splitlines()


def _transcript(n: int, every: float = 4.0) -> Transcript:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    segs = [Segment(k * every, k * every + 3.0, f"segment {k} says {words[k % len(words)]} and more words here")
            for k in range(n)]
    return Transcript(segments=tuple(segs), language="en", engine="pocketsphinx", model=None, duration_s=n * every)


def test_the_speech_given_stays_within_its_budget_nearest_the_moment_first() -> None:
    long = _transcript(300)  # 20 minutes of talk
    at = heard_context(long, [(590.0, 610.0)], focus=600.0, budget_tokens=60)
    assert 0 < at.tokens <= 60 and at.left_out > 0
    starts = [a for a, _, _ in at.segments]
    assert starts == sorted(starts)  # shown in time order
    assert any(a <= 600.0 <= b for a, b, _ in at.segments)  # the moment asked about is in
    assert max(abs((a + b) / 2 - 600.0) for a, b, _ in at.segments) <= 12.0  # and its nearest neighbours
    # no time named and too long to give whole: the segments sharing the question's words first
    found = heard_context(long, None, question="When is foxtrot mentioned?", budget_tokens=40)
    assert found.segments and all("foxtrot" in t for _, _, t in found.segments)
    assert heard_context(None, [(0, 10)]).lines == [] and heard_context(long, [(0, 10)]).prompt("Q") != "Q"


def test_sources_mark_heard_what_the_answer_repeats() -> None:
    given = heard_context(_transcript(3), [(0.0, 12.0)])
    answer = Event("answer", 4.5, 4.5, "At 0:04 she says bravo and more.")
    sources = mark_sources("At 0:04 the segment says bravo and more words.", given,
                           {"evidence": SEEN, "what": "frames", "used": True, "text": "6 frames"}, [answer])
    heard = [s for s in sources if s["evidence"] == HEARD]
    assert [s["used"] for s in heard] == [True, True, True]  # "segment ... more words" repeated from each
    none = mark_sources("Nothing of that.", given, None, [])
    assert not any(s["used"] for s in none) and evidence_words(none) == ""
    assert answer.detail["evidence"] == HEARD and evidence_words(sources) == "seen and heard"
