"""Low-resolution proxies: a small H.264 copy of a video for the browser's player.

`st.video` reads a local file wholly into memory and browsers play only some codecs, so long,
large or exotic videos are played from a proxy (at most 360 pixels high, at most 15 fps, silent)
while every analysis still reads the original file. Times are kept: frame at t s in the original
is shown at t s in the proxy. Proxies count in the size limit of uploads and proxies (see
`core.files.store.evict_files`).
"""

from __future__ import annotations

import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

PROXY_MAX_BYTES = 200 * 1024**2
BROWSER_CODECS = {"h264", "vp8", "vp9", "av1"}
BROWSER_CONTAINERS = ("mp4", "mov", "webm", "matroska")


def needs_proxy(info: Any, max_bytes: int = PROXY_MAX_BYTES) -> str | None:
    """Why a probed video (VideoInfo) should play from a proxy, or None when the original plays well."""
    if info.size_bytes > max_bytes:
        return f"the file is {info.size_bytes / 1024**2:.0f} MiB (the player would load it whole into memory)"
    if (info.codec or "").lower() not in BROWSER_CODECS:
        return f"browsers cannot play its {info.codec} video"
    if not any(c in (info.container or "") for c in BROWSER_CONTAINERS):
        return f"browsers cannot play its {info.container} container"
    return None


def proxy_path(cache_dir: str | os.PathLike[str], sha256: str, height: int = 360) -> Path:
    """Where the proxy of a file is kept; an existing proxy counts as used now (last out of the size limit)."""
    folder = Path(cache_dir).expanduser() / "proxies"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / f"{sha256}-{height}p.mp4"
    try:
        os.utime(path)
    except FileNotFoundError:
        pass
    return path


def make_proxy(src: str | os.PathLike[str], dst: str | os.PathLike[str], max_height: int = 360, max_fps: float = 15.0,
               progress: Callable[[float, str], None] | None = None,
               cancel: threading.Event | None = None, limit_bytes: int | None = None) -> Path:
    """Encode `src` as a small H.264 mp4 at `dst` (written to a temporary name, renamed when complete).

    When `dst` is in a cache's proxies folder (`proxy_path`), uploads and proxies are then evicted down
    to `limit_bytes` (default: the `cache_size_limit_gb` setting), the new proxy excepted.
    """
    from core.files.store import using

    dst = Path(dst)
    with using(src):  # the source (maybe an upload) stays while it is read
        _encode(src, dst, max_height, max_fps, progress, cancel)
    if dst.parent.name == "proxies":
        from core.files.store import evict_files

        with using(dst):
            evict_files(dst.parent.parent, limit_bytes)
    if progress is not None:
        progress(1.0, "proxy ready")
    return dst


def _encode(src: str | os.PathLike[str], dst: Path, max_height: int, max_fps: float,
            progress: Callable[[float, str], None] | None, cancel: threading.Event | None) -> None:
    import av

    from core.media.avopen import open_input
    from core.media.errors import Cancelled, VideoError

    tmp = dst.with_name(dst.name + ".part")
    try:
        inp = open_input(src)
    except av.error.FFmpegError as exc:
        raise VideoError(f"{Path(src).name} could not be opened to make a proxy ({exc}); re-export it as mp4.") from exc
    try:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        src_fps = float(vin.average_rate or 25)
        fps = min(src_fps, max_fps)
        duration = float(vin.duration * vin.time_base) if vin.duration and vin.time_base else (
            inp.duration / 1e6 if inp.duration else 0.0)
        w, h = vin.codec_context.width, vin.codec_context.height
        scale = min(1.0, max_height / max(1, h))
        ow, oh = max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)
        with av.open(str(tmp), "w", format="mp4") as out:
            vout = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            vout.width, vout.height, vout.pix_fmt = ow, oh, "yuv420p"
            vout.options = {"preset": "veryfast", "crf": "30", "movflags": "+faststart"}
            n = 0
            for frame in inp.decode(vin):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("making the proxy was cancelled")
                t = float(frame.time or 0.0)
                while n / fps <= t + 1e-6:
                    # a fresh frame (no source pts/time base): the encoder numbers it, one every 1/fps s
                    small = av.VideoFrame.from_ndarray(frame.to_ndarray(width=ow, height=oh, format="rgb24"),
                                                       format="rgb24")
                    for packet in vout.encode(small):
                        out.mux(packet)
                    n += 1
                if progress is not None and duration > 0 and n % 30 == 0:
                    progress(min(1.0, t / duration), f"proxy: {t:.0f} of {duration:.0f} s")
            for packet in vout.encode():
                out.mux(packet)
        os.replace(tmp, dst)
    finally:
        inp.close()
        if tmp.exists():
            tmp.unlink()
