"""`vlscope batch`: a folder of made files (two videos with a cut, a scanned page, a broken .mp4) analysed
into the dashboard's cache and Library, per-file results, cache hits on a second run, resume, exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from core.cache import ResultCache
from core.cli import main

FPS = 10


def _video(path: Path, n_frames: int, cut_at: int, seed: int) -> Path:
    """An OpenCV-written mp4: one random picture, then another from frame `cut_at` (a hard cut)."""
    rng = np.random.default_rng(seed)
    first, second = (np.kron(rng.integers(20, 235, (12, 16, 3), dtype=np.uint8), np.ones((10, 10, 1), np.uint8))
                     for _ in range(2))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (160, 120))
    for i in range(n_frames):
        writer.write(np.ascontiguousarray(first if i < cut_at else second))
    writer.release()
    return path


def _page(path: Path, text: str) -> Path:
    img = Image.new("RGB", (640, 180), "white")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 52)
    except OSError:
        font = ImageFont.load_default(size=52)
    draw.text((24, 60), text, fill="black", font=font)
    img.save(path)
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def by_file(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["file"]: f for f in report["files"]}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A folder of files, the cache the batch fills (VLSCOPE_CACHE_DIR), and the first run's JSON report."""
    root = tmp_path_factory.mktemp("batch")
    folder = root / "incoming"
    folder.mkdir()
    _video(folder / "talk.mp4", 30, 15, seed=1)  # cut at 1.5 s
    _video(folder / "demo.mp4", 40, 10, seed=2)  # cut at 1.0 s
    _page(folder / "scan.png", "INVOICE 2024")
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"not a real video " * 40)
    cache_dir = root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLSCOPE_CACHE_DIR", str(cache_dir))
        mp.delenv("VLSCOPE_CACHE_BACKEND", raising=False)
        code, out, err = run_cli("batch", str(folder), "--stages", "scenes,motion,text,ocr", "--json")
        yield {"root": root, "folder": folder, "cache_dir": cache_dir, "code": code,
               "report": json.loads(out), "err": err}


def test_first_run_results_per_file(env: dict[str, Any]) -> None:
    report = env["report"]
    files = by_file(report)
    assert env["code"] == 1  # one file failed
    assert report["counts"] == {"done": 3, "cached": 0, "failed": 1, "skipped": 0}
    assert sorted(files) == ["broken.mp4", "demo.mp4", "scan.png", "talk.mp4"]
    for name in ("talk.mp4", "demo.mp4"):
        assert files[name]["status"] == "done"
        assert files[name]["stages"] == {"scenes": "computed", "motion": "computed", "text": "computed"}
        assert files[name]["events"] >= 2  # at least the two shots
    assert files["scan.png"]["status"] == "done" and files["scan.png"]["pages"] == 1
    assert files["scan.png"]["stages"] == {"ocr": "computed"}
    assert files["broken.mp4"]["status"] == "failed"
    assert "not a video" in files["broken.mp4"]["error"]
    error_lines = [ln for ln in env["err"].splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and error_lines[0].startswith("error: broken.mp4: ")
    assert "Traceback" not in env["err"]


def test_results_show_in_the_library(env: dict[str, Any]) -> None:
    from core.library import list_items, load_results, thumbnail_of

    with ResultCache(env["cache_dir"]) as cache:
        items = {i.name: i for i in list_items(cache)}
        assert sorted(items) == ["demo.mp4", "scan.png", "talk.mp4"]  # the broken file is not listed
        talk = items["talk.mp4"]
        assert talk.kind == "video" and talk.available and talk.path == str(env["folder"] / "talk.mp4")
        assert {"Scene cuts", "Motion", "On-screen text"} <= set(talk.stages)
        cuts = [e.start for e in load_results(cache, talk.input_hash).events if e.kind == "scene"]
        assert any(abs(t - 1.5) <= 0.15 for t in cuts), cuts
        demo_cuts = [e.start for e in load_results(cache, items["demo.mp4"].input_hash).events if e.kind == "scene"]
        assert any(abs(t - 1.0) <= 0.15 for t in demo_cuts), demo_cuts
        scan = items["scan.png"]
        assert scan.kind == "image" and scan.stages == ["OCR"]
        assert "INVOICE" in load_results(cache, scan.input_hash).ocr_text
        assert (thumbnail_of(cache, talk.input_hash) or b"")[:2] == b"\xff\xd8"  # a JPEG thumbnail


def test_second_run_is_all_cache_hits(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import core.analysis.video_pipeline as vp
    import core.ocr.pipeline as op

    def recomputed(*a: Any, **k: Any) -> Any:
        raise AssertionError("a cached result was recomputed")

    monkeypatch.setattr(vp, "run_frame_pass", recomputed)
    monkeypatch.setattr(vp, "run_text_pass", recomputed)
    monkeypatch.setattr(op, "ocr_page_image", recomputed)
    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(env["cache_dir"]))
    with ResultCache(env["cache_dir"]) as cache:
        before = cache.stats()
    code, out, _ = run_cli("batch", str(env["folder"]), "--stages", "scenes,motion,text,ocr", "--json")
    report = json.loads(out)
    files = by_file(report)
    assert code == 1  # the broken file still fails
    assert report["counts"] == {"done": 0, "cached": 3, "failed": 1, "skipped": 0}
    assert set(files["talk.mp4"]["stages"].values()) == {"cached"}
    assert files["scan.png"]["stages"] == {"ocr": "cached"} and files["scan.png"]["pages"] == 1
    assert files["talk.mp4"]["events"] == by_file(env["report"])["talk.mp4"]["events"]
    assert report["seconds"] < 3.0
    with ResultCache(env["cache_dir"]) as cache:
        after = cache.stats()
    assert after.entries == before.entries  # nothing new stored
    assert after.hits >= before.hits + 8  # probe + 3 stages for two videos, the page


def test_exit_code_zero_when_every_file_works_and_text_summary(env: dict[str, Any],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    good = env["root"] / "good"
    good.mkdir()
    shutil.copy(env["folder"] / "talk.mp4", good / "talk.mp4")
    shutil.copy(env["folder"] / "scan.png", good / "scan.png")
    (good / "notes.txt").write_text("not media")
    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(env["cache_dir"]))
    code, out, err = run_cli("batch", str(good), "--stages", "scenes,motion")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("skipped  notes.txt")
    assert lines[1].startswith("skipped  scan.png") and "ocr" in lines[1]  # no OCR asked
    assert lines[2].startswith("cached   talk.mp4: ") and "scenes (cached)" in lines[2]
    assert lines[-1].startswith("3 files: 0 analysed, 1 from the cache, 0 failed, 2 skipped")


def test_interrupted_batch_resumes(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import core.analysis.video_pipeline as vp

    folder = env["root"] / "resume"
    folder.mkdir()
    _video(folder / "new.mp4", 30, 20, seed=3)
    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(env["root"] / "resume-cache"))
    real_text_pass = vp.run_text_pass

    def interrupted(*a: Any, **k: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(vp, "run_text_pass", interrupted)  # Ctrl-C during the text stage
    code, _, err = run_cli("batch", str(folder), "--stages", "scenes,motion,text", "--json")
    assert code == 130 and "interrupted" in err
    monkeypatch.setattr(vp, "run_text_pass", real_text_pass)
    code, out, _ = run_cli("batch", str(folder), "--stages", "scenes,motion,text", "--json")
    assert code == 0
    new = by_file(json.loads(out))["new.mp4"]
    assert new["status"] == "done"
    assert new["stages"] == {"scenes": "cached", "motion": "cached", "text": "computed"}


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    code, _, err = run_cli("batch", str(tmp_path / "missing"))
    assert code == 1 and err.startswith("error: ") and "is not a folder" in err
    code, _, err = run_cli("batch", str(tmp_path), "--stages", "scenes,faces")
    assert code == 1 and "unknown stage(s) faces" in err
