"""Fixtures shared by the visual-memory tests (test_ingest, test_prefix_stream)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.square_video import write_square_video


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 s at 10 fps, 160x96: a square crossing a background whose colour changes every second."""
    return write_square_video(tmp_path_factory.mktemp("video") / "square.mp4", 240, 9, 5)
