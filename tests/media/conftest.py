"""Videos made by the tests: known cuts, fades, motion and text at known times (small, short)."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

FPS = 25
W, H = 320, 180


def write_video(path: Path, frame_at: Callable[[int], np.ndarray], n_frames: int, fps: int = FPS,
                codec: str = "libx264", gop: int = 50, pts_of: Callable[[int], int] | None = None,
                time_base: Fraction | None = None) -> Path:
    """Encode frames `frame_at(i)` (RGB uint8) with PyAV; `pts_of` + `time_base` give variable frame rates."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        first = frame_at(0)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_at(i), format="rgb24")
            if pts_of is not None:
                frame.pts = pts_of(i)
                frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def ffmpeg() -> str:
    from shutil import which

    found = which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:  # e.g. a GPU box with PyAV but no ffmpeg: the tests that need the program skip
        pytest.skip("needs the ffmpeg program (apt-get install ffmpeg, or pip install imageio-ffmpeg)")
    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg(), "-v", "error", "-y", *args], check=True)


def pattern(seed: int, w: int = W, h: int = H) -> np.ndarray:
    """A distinct textured RGB picture per seed (blocks of random colours)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 230, size=(h // 20 + 1, w // 20 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(small, np.ones((20, 20, 1), dtype=np.uint8))[:h, :w])


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def cuts_video(media_dir: Path) -> Path:
    """6 s at 25 fps: three shots with hard cuts at frame 50 (2.0 s) and 100 (4.0 s); a slow pan inside shots."""
    pics = [pattern(1), pattern(2), pattern(3)]

    def frame(i: int) -> np.ndarray:
        return np.roll(pics[min(2, i // 50)], i % 50, axis=1)

    return write_video(media_dir / "cuts.mp4", frame, 150)


@pytest.fixture(scope="session")
def fades_video(media_dir: Path) -> Path:
    """Shot A 0-2 s, fade out 2.0-2.6 s, black 2.6-3.0 s, fade in 3.0-3.6 s, shot B to 5.6 s."""
    a, b = pattern(4).astype(np.float32), pattern(5).astype(np.float32)

    def frame(i: int) -> np.ndarray:
        t = i / FPS
        if t < 2.0:
            img, g = a, 1.0
        elif t < 2.6:
            img, g = a, 1 - (t - 2.0) / 0.6
        elif t < 3.0:
            img, g = a, 0.0
        elif t < 3.6:
            img, g = b, (t - 3.0) / 0.6
        else:
            img, g = b, 1.0
        return (img * g).astype(np.uint8)

    return write_video(media_dir / "fades.mp4", frame, 140)


@pytest.fixture(scope="session")
def motion_video(media_dir: Path) -> Path:
    """8 s: a still picture; a square moves from 2.0 s to 4.0 s and again from 6.0 s to 7.0 s."""
    base = np.full((H, W, 3), 90, dtype=np.uint8)
    base[20:60, 200:300] = (200, 180, 40)

    def frame(i: int) -> np.ndarray:
        t = i / FPS
        img = base.copy()
        if t < 2.0:
            x = 20
        elif t < 4.0:
            x = 20 + int((t - 2.0) * 60)
        elif t < 6.0:
            x = 140
        elif t < 7.0:
            x = 140 - int((t - 6.0) * 100)
        else:
            x = 40
        img[100:150, x:x + 40] = (240, 240, 240)
        return img

    return write_video(media_dir / "motion.mp4", frame, 200)


@pytest.fixture(scope="session")
def text_video(media_dir: Path) -> Path:
    """7 s at 10 fps, 480x270: "HELLO WORLD" from 1.0 to 3.0 s, "SECOND CAPTION" from 4.0 to 6.0 s."""
    import cv2

    def frame(i: int) -> np.ndarray:
        t = i / 10
        img = np.full((270, 480, 3), 245, dtype=np.uint8)
        img[200:260, 0:480] = (60, 90, 160)
        text = "HELLO WORLD" if 1.0 <= t < 3.0 else "SECOND CAPTION" if 4.0 <= t < 6.0 else None
        if text:
            cv2.putText(img, text, (30, 120), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 3, cv2.LINE_AA)
        return img

    return write_video(media_dir / "text.mp4", frame, 70, fps=10, gop=10)


def _mdat(data: bytes) -> tuple[int, int]:
    """(start, size) of the mdat payload of an MP4, from its top-level boxes."""
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        if kind == b"mdat":
            return pos + header, size - header
        pos += size
    raise AssertionError("no mdat box")


@pytest.fixture(scope="module")
def damaged_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s at 25 fps, shots cut at 4.0 and 9.0 s, key frames every 1 s; 3% of the mdat at 45% overwritten."""
    folder = tmp_path_factory.mktemp("damaged")
    shots = [pattern(11), pattern(12), pattern(13)]

    def frame(i: int) -> np.ndarray:
        return np.roll(shots[0 if i < 100 else 1 if i < 225 else 2], i % 40, axis=1)

    good = write_video(folder / "good.mp4", frame, 300, gop=25)
    data = bytearray(good.read_bytes())
    start, size = _mdat(bytes(data))
    at = start + int(size * 0.45)
    data[at:at + int(size * 0.03)] = np.random.default_rng(7).integers(0, 256, int(size * 0.03), dtype=np.uint8).tobytes()
    bad = folder / "damaged.mp4"
    bad.write_bytes(bytes(data))
    return bad
