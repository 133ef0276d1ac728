"""Files made by the page tests: a short video with known cuts and text, and a rendered text image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

FPS = 25


def pattern(seed: int, w: int = 320, h: int = 180) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 230, size=(h // 20 + 1, w // 20 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(small, np.ones((20, 20, 1), dtype=np.uint8))[:h, :w])


def make_video(path: Path, seconds: int = 6) -> Path:
    """`seconds` s at 25 fps, 320x180: a new shot every 2 s (hard cuts at 2.0, 4.0, ...), a slow pan inside,
    and the words HELLO 42 on screen from 2 to 4 s."""
    import av
    import cv2

    shots = [pattern(k + 1) for k in range(seconds // 2 + 1)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "25", "sc_threshold": "0"}
        for i in range(seconds * FPS):
            frame = np.roll(shots[i // (2 * FPS)], i % 50, axis=1).copy()
            if 2 * FPS <= i < 4 * FPS:
                cv2.rectangle(frame, (20, 60), (300, 120), (255, 255, 255), -1)
                cv2.putText(frame, "HELLO 42", (40, 105), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 3)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def text_image(lines: list[str], size: int = 36) -> bytes:
    """A white PNG with black `lines` of text (DejaVu Sans), as bytes."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", size)
    width = max(int(font.getlength(t)) for t in lines) + 80
    img = Image.new("RGB", (width, int(len(lines) * size * 1.7) + 60), "white")
    draw = ImageDraw.Draw(img)
    for n, t in enumerate(lines):
        draw.text((40, 30 + n * size * 1.7), t, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
