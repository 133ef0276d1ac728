"""API fixtures: settings with a temporary cache, a small upload limit and no model; a real uvicorn server."""

from __future__ import annotations

import io
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from core.settings import Settings

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
UPLOAD_LIMIT_MB = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def api_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("api")
    return Settings(model=str(root / "no-model-here"), offline=True, cache_dir=root / "cache",
                    max_upload_mb=UPLOAD_LIMIT_MB)


@pytest.fixture(scope="session")
def api_app(api_settings: Settings):
    from core.api import create_app

    return create_app(api_settings)


@contextmanager
def serving(app) -> Iterator[str]:
    """`app` under a real uvicorn server on a free loopback port; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_url(api_app):
    """The app under a real uvicorn server on a free loopback port (stopped after the session)."""
    with serving(api_app) as url:
        yield url


def rendered_png(lines: list[str], size: int = 30) -> bytes:
    """Black text on white (DejaVu Sans), as PNG bytes."""
    if not Path(FONT).exists():
        pytest.skip(f"font {FONT} is missing (apt-get install fonts-dejavu-core)")
    font = ImageFont.truetype(FONT, size)
    width = max(font.getbbox(t)[2] for t in lines) + 60
    img = Image.new("RGB", (width, int(size * 1.6) * len(lines) + 60), "white")
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(lines):
        draw.text((30, 30 + i * int(size * 1.6)), text, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def pattern(seed: int, w: int = 320, h: int = 180) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 230, size=(h // 20 + 1, w // 20 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(small, np.ones((20, 20, 1), dtype=np.uint8))[:h, :w])


@pytest.fixture(scope="session")
def cuts_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s at 25 fps (H.264): three shots with hard cuts at 2.0 s and 4.0 s."""
    import av

    path = tmp_path_factory.mktemp("videos") / "cuts.mp4"
    pics = [pattern(1), pattern(2), pattern(3)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.height, stream.width = 180, 320
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "50", "keyint_min": "50", "sc_threshold": "0"}
        for i in range(150):
            frame = av.VideoFrame.from_ndarray(np.roll(pics[min(2, i // 50)], i % 50, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
