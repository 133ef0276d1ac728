"""The moving-square video the visual-memory tests ask about (tests/vlm, tests/analysis), made with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_square_video(path: Path, frames: int, red_step: int, blue_step: int) -> Path:
    """`frames` at 10 fps, 160x96: a white 16-pixel square crossing left to right over the whole video, on a
    background whose red rises by `red_step` and blue falls by `blue_step` every second."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 96))
    for i in range(frames):
        frame = np.zeros((96, 160, 3), np.uint8)
        frame[:] = ((i // 10) * red_step % 256, 80, 200 - (i // 10) * blue_step)
        x = 4 + (i * 140) // frames
        frame[40:56, x:x + 16] = 255
        writer.write(frame)
    writer.release()
    return path
