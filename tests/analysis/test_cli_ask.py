"""`vlscope ask`, `vlscope video captions` and `vlscope video chapters` as a user runs them, on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

VLSCOPE = str(Path(sys.executable).parent / "vlscope")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("files")
    video = folder / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 96))
    for i in range(300):
        frame = np.zeros((96, 160, 3), np.uint8)
        frame[:] = (i % 255, 60, 0)
        writer.write(frame)
    writer.release()
    image = folder / "shot.png"
    Image.new("RGB", (200, 120), "white").save(image)
    return {"video": video, "image": image, "folder": folder}


def _run(args: list[str], model: Path | str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VLSCOPE_MODEL": str(model), "VLSCOPE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([VLSCOPE, *args], env=env, capture_output=True, text=True, timeout=300)


def test_ask_video_json(files, tiny_model_dir: Path) -> None:
    out = _run(["ask", str(files["video"]), "第0分15秒发生了什么", "--json", "--fps", "1", "--max-new-tokens", "6"],
               tiny_model_dir, files["folder"] / "c")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["time_reference"] == [15.0, 15.0]
    assert data["dense_windows"][0] == [5.0, 25.0]
    assert isinstance(data["text"], str) and data["frames_seen"] > 0


def test_ask_image_json(files, tiny_model_dir: Path) -> None:
    out = _run(["ask", str(files["image"]), "What does this button do?", "--json", "--max-new-tokens", "5"],
               tiny_model_dir, files["folder"] / "c")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["pages"] == [0] and data["ocr_used"] is False


def test_chapters_vtt_without_usable_captions(files, tiny_model_dir: Path) -> None:
    out = _run(["video", "chapters", str(files["video"]), "--format", "vtt", "--chunk", "20", "--overlap", "2",
                "--max-new-tokens", "6", "--no-text"], tiny_model_dir, files["folder"] / "c")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("WEBVTT")
    assert "No events found" in out.stderr


def test_ask_without_model_is_one_clear_line(files) -> None:
    out = _run(["ask", str(files["image"]), "x"], "Qwen/Qwen3-VL-Missing", files["folder"] / "c")
    assert out.returncode == 1
    assert out.stderr.startswith("error: Model 'Qwen/Qwen3-VL-Missing' is not available")
    assert "Traceback" not in out.stderr


def test_ask_missing_file(files, tiny_model_dir: Path) -> None:
    out = _run(["ask", str(files["folder"] / "nope.mp4"), "x"], tiny_model_dir, files["folder"] / "c")
    assert out.returncode == 1 and "does not exist" in out.stderr


def test_video_ingest_then_again_encodes_nothing(files, tiny_model_dir: Path) -> None:
    cache = files["folder"] / "ingest-cache"
    first = _run(["video", "ingest", str(files["video"])], tiny_model_dir, cache)
    assert first.returncode == 0, first.stderr
    assert "0 already stored" in first.stdout and " parts; " in first.stdout
    parts = int(first.stdout.split(" frames in ")[1].split(" parts")[0])
    again = _run(["video", "ingest", str(files["video"])], tiny_model_dir, cache)
    assert again.returncode == 0, again.stderr
    assert f"{parts} already stored, 0 encoded now" in again.stdout
