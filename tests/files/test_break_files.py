"""Issue 12, the file store's part: uploads and proxies within a size limit (D12d), over-long paths (D12e)."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from core.errors import UserError
from core.files import FileError, make_proxy, open_server_file, proxy_path, store_upload

KB = 1000


def aged(path: str | Path, seconds_ago: float) -> None:
    """Make `path` look last used `seconds_ago`."""
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def test_break12d_uploads_and_proxies_are_kept_within_the_size_limit(tmp_path: Path) -> None:
    from core.files.store import evict_files, using
    from tests.pages.media import make_video

    cache = tmp_path / "cache"
    big = 10**9

    def upload(seed: int, name: str, limit: int = big):
        return store_upload(io.BytesIO(bytes([seed]) * 400 * KB), name, cache, max_bytes=big, limit_bytes=limit)

    a, b = upload(1, "a.png"), upload(2, "b.png")
    aged(a.path, 7200)
    aged(b.path, 3600)
    # a third upload goes over 1 MB: the least recently used one (a) goes, the others stay
    c = upload(3, "c.png", limit=1000 * KB)
    assert not Path(a.path).exists() and Path(b.path).exists() and Path(c.path).exists()

    # uploading b again counts as using it: now c is the least recently used
    aged(b.path, 7200)
    aged(c.path, 3600)
    again = upload(2, "b-again.png")
    assert again.path == b.path
    aged(c.path, 5400)
    aged(b.path, 3600)

    # a proxy counts in the limit too: without it b and c (800 KB) would fit
    video = make_video(tmp_path / "clip.mp4", seconds=2)
    proxy = make_proxy(video, proxy_path(cache, "f" * 64), max_height=90)
    size = proxy.stat().st_size
    aged(proxy, 600)
    with using(c.path):  # c is being read (by another page, a job...): never removed
        removed = evict_files(cache, limit_bytes=800 * KB + size - 1)
    assert removed == [Path(b.path)] and Path(c.path).exists() and proxy.exists()

    # once c is no longer used it can go; a file used in the last minutes (d) stays even over the limit
    d = upload(4, "d.png", limit=1)
    assert not Path(c.path).exists() and not proxy.exists() and Path(d.path).exists()
    assert sorted(p.name for p in (cache / "uploads").iterdir()) == [Path(d.path).name]

    # making a proxy applies the limit as well (the new proxy itself stays)
    aged(d.path, 3600)
    newer = make_proxy(video, proxy_path(cache, "e" * 64), max_height=90, limit_bytes=1)
    assert newer.exists() and not Path(d.path).exists()
    assert [p.name for p in (cache / "proxies").iterdir()] == [newer.name]


@pytest.mark.parametrize("path,says", [
    ("a" * 5000, "too long"),                       # one name far over 255 bytes
    ("/".join(["b" * 200] * 30), "too long"),       # short names, a path over 4096 bytes
    ("x/" * 2500, "too long"),                      # thousands of folders
    ("/".join(["c" * 250] * 16), "does not exist"),  # a long path of a missing file
])
def test_break12e_a_very_long_path_is_a_clear_file_error(tmp_path: Path, path: str, says: str) -> None:
    root = tmp_path / "media"
    root.mkdir()
    with pytest.raises(FileError) as caught:
        open_server_file(path, root)
    message = str(caught.value)
    assert isinstance(caught.value, UserError)
    assert says in message and "media folder" in message
    assert len(message) < 600, message  # the path is shortened, not printed whole


def test_break12e_a_long_path_that_exists_still_opens(tmp_path: Path) -> None:
    root = tmp_path / "media"
    deep = root.joinpath(*["d" * 250] * 8)
    deep.mkdir(parents=True)
    (deep / "clip.mp4").write_bytes(b"x" * 10)
    assert open_server_file(str((deep / "clip.mp4").relative_to(root)), root).name == "clip.mp4"
