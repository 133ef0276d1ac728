"""Break-test defects of video decoding (issue 12), each on real files made here with PyAV/ffmpeg.

D0: every PyAV open works on PyAV 18 and 19 (19 dropped `metadata_errors`).
D4: on-screen text partial saves grow linearly, resume after cancel, and are gone once complete.
D6: a truncated faststart MP4 reports its readable end, with a warning, and no event past it.
D7: a damaged packet costs its own seconds, not the rest of the file; the result is cached.
"""

from __future__ import annotations

import ast
import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.analysis.video_pipeline import AnalysisOptions, analyze_video, load_partial_text
from core.cache import ResultCache
from core.media import Cancelled, SamplingPlan, probe_video, sample_video
from core.media.avopen import open_input
from core.media.text import TextParams
from tests.media.conftest import ffmpeg, run_ffmpeg, write_video

ROOT = Path(__file__).resolve().parents[2]


# -- D0: PyAV 18 and 19 ------------------------------------------------------------------------

def _av_open_calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "open" and isinstance(n.func.value, ast.Name) and n.func.value.id == "av"]


def test_break0_no_av_open_in_core_passes_metadata_errors() -> None:
    offenders = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        for call in _av_open_calls(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if any(k.arg in ("metadata_errors", "metadata_encoding") for k in call.keywords):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert not offenders, f"PyAV 19 rejects metadata_errors; use core.media.avopen.open_input: {offenders}"


def test_break0_open_input_reads_badly_encoded_metadata(tmp_path: Path) -> None:
    # a title written in Latin-1: PyAV 18 fails on it unless told to ignore, PyAV 19 reads it as surrogates
    out = tmp_path / "latin1.mp4"
    subprocess.run([ffmpeg().encode(), b"-v", b"error", b"-y", b"-f", b"lavfi", b"-i", b"testsrc2=size=64x64:rate=5",
                    b"-t", b"2", b"-c:v", b"libx264", b"-pix_fmt", b"yuv420p", b"-metadata", b"title=caf\xe9 cr\xe8me",
                    str(out).encode()], check=True)
    container = open_input(out)
    try:
        assert container.metadata["title"].startswith("caf")
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (64, 64)
    finally:
        container.close()
    info = probe_video(out)
    assert info.duration == pytest.approx(2.0, abs=0.25) and info.frame_count == 10
    assert len(sample_video(info, SamplingPlan(fps=2)).frames) == 4


# -- D6: a truncated faststart MP4 -------------------------------------------------------------

def _decoded_by_ffmpeg(path: Path) -> tuple[int, float]:
    """(frames ffmpeg itself decodes, end time of the last one): the ground truth for a damaged file."""
    out = subprocess.run([ffmpeg(), "-v", "quiet", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
                         capture_output=True, text=True).stdout
    tb = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("#tb 0:"))
    num, den = (int(x) for x in tb.split("/"))
    rows = [line.split(",") for line in out.splitlines() if line and not line.startswith("#")]
    last = max(int(r[2]) + int(r[3]) for r in rows)  # pts + duration of the last frame
    return len(rows), last * num / den


@pytest.fixture(scope="module")
def truncated_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s at 25 fps, index at the front (+faststart), cut to 40% of its bytes."""
    folder = tmp_path_factory.mktemp("trunc")
    full = folder / "full.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "20", "-c:v", "libx264", "-preset",
               "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(full))
    data = full.read_bytes()
    cut = folder / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    return cut


def test_break6_truncated_mp4_reports_its_readable_end(tmp_path: Path, truncated_mp4: Path) -> None:
    frames, readable = _decoded_by_ffmpeg(truncated_mp4)
    assert 4.0 < readable < 12.0  # about 40% of 20 s
    info = probe_video(truncated_mp4)
    assert info.truncated and info.declared_duration == pytest.approx(20.0, abs=0.05)
    assert info.duration == pytest.approx(readable, abs=0.1)
    assert abs(info.frame_count - frames) <= 2
    expected = f"the file ends at 0:{int(info.duration):02d} of 0:20"
    assert any(expected in w and "looks truncated" in w for w in info.warnings), info.warnings

    with ResultCache(tmp_path / "cache") as cache:
        result = analyze_video(truncated_mp4, stages=("scenes", "motion"), cache=cache)
        assert not result.complete
        assert any(expected in w for w in result.warnings), result.warnings
        assert result.events and max(e.end for e in result.events) <= info.duration + 0.05
        scenes = [e for e in result.events if e.kind == "scene"]
        assert scenes[-1].end == pytest.approx(info.duration, abs=0.05)  # not to 20 s
        again = analyze_video(truncated_mp4, stages=("scenes", "motion"), cache=cache)
        assert all(again.from_cache.values()) and not again.complete  # cached, still marked partial
        assert any(expected in w for w in again.warnings) and again.events == result.events

    sampled = sample_video(info, SamplingPlan(fps=2))
    assert not sampled.complete and any(expected in w for w in sampled.warnings)
    assert max(f.time for f in sampled.frames) < info.duration


def test_break6_questions_past_the_readable_end_say_so(tiny_engine: Any, truncated_mp4: Path) -> None:
    from core.analysis.qa import VideoQA
    from core.analysis.sources import MediaFrameSource
    from core.vlm import GenerationParams

    source = MediaFrameSource(truncated_mp4)
    end = int(source.duration())
    qa = VideoQA(tiny_engine, source)
    past = qa.ask("What happens at 0:15?", GenerationParams.greedy_defaults(6))
    message = f"can only be read up to 00:{end:02d} of 00:20"
    assert any(message in w and "truncated" in w for w in past.warnings), past.warnings
    assert message in past.text and past.frames_seen == 0  # not answered from other seconds
    inside = qa.ask("What happens at 0:02?", GenerationParams.greedy_defaults(6))
    assert not any("can only be read" in w for w in inside.warnings) and inside.frames_seen > 0


# -- D7: a damaged packet in the middle --------------------------------------------------------

def test_break7_decoding_goes_on_after_a_damaged_packet(tmp_path: Path, damaged_mp4: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import core.analysis.video_pipeline as vp

    calls: list[str] = []
    real = vp.run_frame_pass

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append("frame pass")
        return real(*args, **kwargs)

    monkeypatch.setattr(vp, "run_frame_pass", counted)
    with ResultCache(tmp_path / "cache") as cache:
        result = analyze_video(damaged_mp4, stages=("scenes", "motion"), cache=cache)
        lost = [w for w in result.warnings if "could not be read at" in w]
        assert len(lost) == 1 and "packet(s) skipped" in lost[0], result.warnings
        spans = result.stages["scenes"]
        assert spans["complete"] is False
        # the warning names seconds inside the damaged stretch (45-48% of the bytes: around 4-7 s)
        first = float(lost[0].split("could not be read at ")[1].split("-")[0])
        assert 2.0 <= first <= 8.0
        cuts = [e.start for e in result.events if e.kind == "scene"][1:]
        assert any(abs(c - 9.0) <= 0.1 for c in cuts), cuts  # the cut after the damage is still found
        scenes = [e for e in result.events if e.kind == "scene"]
        assert scenes[-1].end == pytest.approx(12.0, abs=0.05)
        again = analyze_video(damaged_mp4, stages=("scenes", "motion"), cache=cache)
        assert again.from_cache == {"probe": True, "scenes": True, "motion": True}
        assert lost[0] in again.warnings and not again.complete
    assert calls == ["frame pass"]  # the second run did not decode again

    info = probe_video(damaged_mp4)
    sampled = sample_video(info, SamplingPlan(fps=2))
    times = [f.time for f in sampled.frames]
    assert max(times) >= 11.0 and sum(t > first + 2.0 for t in times) >= 6  # frames past the damage
    assert any("could not be read at" in w for w in sampled.warnings) and not sampled.complete


# -- D4: on-screen text partial saves ---------------------------------------------------------

class CountingCache:
    """The real cache, counting the bytes written per stage."""

    def __init__(self, inner: ResultCache) -> None:
        self.inner = inner
        self.written: dict[str, int] = {}

    def put_json(self, key: Any, value: Any) -> None:
        size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        self.written[key.stage] = self.written.get(key.stage, 0) + size
        self.inner.put_json(key, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _caption_video(path: Path, seconds: int) -> Path:
    """`seconds` s at 2 fps, 480x270: "FIRST PART" in the first half, "SECOND PART" in the second."""
    import cv2

    pics = []
    for text in ("FIRST PART", "SECOND PART"):
        img = np.full((270, 480, 3), 245, dtype=np.uint8)
        cv2.putText(img, text, (30, 140), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (0, 0, 0), 3, cv2.LINE_AA)
        pics.append(img)
    return write_video(path, lambda i: pics[0 if i < seconds else 1], seconds * 2, fps=2, gop=20)


@pytest.fixture(scope="module")
def caption_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("captions")
    return {s: _caption_video(folder / f"captions{s}.mp4", s) for s in (60, 240)}


def _texts(result: Any) -> list[tuple[str, float, float]]:
    return [(s["text"], round(s["start"], 2), round(s["end"], 2)) for s in result.text().spans]


def test_break4_text_partial_saves_grow_linearly_and_go_away(tmp_path: Path, caption_videos: dict[int, Path]) -> None:
    options = AnalysisOptions(text=TextParams(fps=1.0))
    written = {}
    for seconds, path in caption_videos.items():
        with ResultCache(tmp_path / f"cache{seconds}") as real:
            cache = CountingCache(real)
            result = analyze_video(path, stages=("text",), options=options, cache=cache)  # type: ignore[arg-type]
            readings = result.text().readings
            assert len(readings) == seconds
            assert [t for t, _, _ in _texts(result)] == ["FIRST PART", "SECOND PART"]
            partial = cache.written.get("video.text.partial", 0)
            final = cache.written["video.text"]
            assert partial <= 1.2 * final, (partial, final)  # each reading saved about once
            assert "video.text.partial" not in {e.stage for e in real.entries(result.input_hash)}
            written[seconds] = partial
    assert written[240] <= 4 * 1.25 * written[60], written  # 4x the readings: about 4x the bytes


def test_break4_cancelled_text_stage_resumes_from_its_partial_saves(tmp_path: Path,
                                                                    caption_videos: dict[int, Path]) -> None:
    path = caption_videos[240]
    options = AnalysisOptions(text=TextParams(fps=1.0))
    with ResultCache(tmp_path / "whole") as cache:
        whole = analyze_video(path, stages=("text",), options=options, cache=cache)
    cancel = threading.Event()

    def press_cancel(fraction: float, message: str = "", stage: str = "") -> None:
        if stage == "text" and fraction >= 0.3:
            cancel.set()

    with ResultCache(tmp_path / "cache") as real:
        with pytest.raises(Cancelled):
            analyze_video(path, stages=("text",), options=options, cache=real, progress=press_cancel, cancel=cancel)
        saved = load_partial_text(real, whole.input_hash, options.text)
        assert 70 <= len(saved) < 240
        assert [r.index for r in saved] == [r.index for r in whole.text().readings[:len(saved)]]
        messages: list[str] = []
        cache = CountingCache(real)
        resumed = analyze_video(path, stages=("text",), options=options, cache=cache,  # type: ignore[arg-type]
                                progress=lambda f, m="", s="": messages.append(m))
        assert f"resuming after {len(saved)} saved readings" in " ".join(messages)
        assert resumed.complete and len(resumed.text().readings) == 240
        assert _texts(resumed) == _texts(whole)  # the span open at the cancel continues across it
        assert resumed.text().ocr_calls <= whole.text().ocr_calls + 1
        per_reading = cache.written["video.text"] / 240
        assert cache.written.get("video.text.partial", 0) <= per_reading * (240 - len(saved) + 60)
        assert "video.text.partial" not in {e.stage for e in real.entries(resumed.input_hash)}
        assert load_partial_text(real, whole.input_hash, options.text) == []
