"""Fixtures shared by the visual-memory tests (test_ingest, test_prefix_stream)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 s at 10 fps, 160x96: a square crossing a background whose colour changes every second."""
    path = tmp_path_factory.mktemp("video") / "square.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 96))
    for i in range(240):
        frame = np.zeros((96, 160, 3), np.uint8)
        frame[:] = ((i // 10) * 9 % 256, 80, 200 - (i // 10) * 5)
        frame[40:56, 4 + (i * 140) // 240:20 + (i * 140) // 240] = 255
        writer.write(frame)
    writer.release()
    return path
