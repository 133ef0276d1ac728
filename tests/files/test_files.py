"""Uploads to disk (hashed once, size limit), the server folder (no traversal, no symlinks out), proxies."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from core.files import FileError, file_kind, list_server_files, make_proxy, needs_proxy, open_server_file, store_upload
from core.files.store import media_root
from core.settings import Settings


def test_upload_is_stored_once_by_content_and_limited(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    a = store_upload(io.BytesIO(data), "clip.MP4", tmp_path, max_bytes=10**6)
    b = store_upload(io.BytesIO(data), "copy.mp4", tmp_path, max_bytes=10**6)
    assert a.sha256 == b.sha256 == hashlib.sha256(data).hexdigest()
    assert a.path == b.path and Path(a.path).read_bytes() == data and a.kind == "video"
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == [f"{a.sha256}.mp4"]
    with pytest.raises(FileError, match="larger than the upload limit"):
        store_upload(io.BytesIO(data), "big.mp4", tmp_path, max_bytes=1000)
    with pytest.raises(FileError, match="empty"):
        store_upload(io.BytesIO(b""), "none.png", tmp_path, max_bytes=1000)
    assert len(list((tmp_path / "uploads").iterdir())) == 1  # no partial files left behind


def test_server_folder_refuses_traversal_and_symlinks_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.mp4").write_bytes(b"x" * 10)
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"secret")
    (root / "link.mp4").symlink_to(secret)
    (root / "inside.mp4").symlink_to(root / "sub" / "a.mp4")
    got = open_server_file("sub/a.mp4", root)
    assert got.sha256 == hashlib.sha256(b"x" * 10).hexdigest() and got.origin == "server"
    assert open_server_file(str(root / "inside.mp4"), root).name == "a.mp4"
    for bad in ("../secret.mp4", "sub/../../secret.mp4", str(secret), "link.mp4"):
        with pytest.raises(FileError, match="outside the allowed media folder"):
            open_server_file(bad, root)
    with pytest.raises(FileError, match="does not exist"):
        open_server_file("nope.mp4", root)
    with pytest.raises(FileError, match="VLSCOPE_MEDIA_ROOT"):
        open_server_file("sub/a.mp4", media_root(Settings(media_root=None)))
    assert media_root(environ={"VLSCOPE_MEDIA_ROOT": str(root)}) == root.resolve()
    assert open_server_file("sub/a.mp4", media_root(Settings(media_root=root))).path == str(root / "sub" / "a.mp4")
    assert list_server_files(root) == ["inside.mp4", "sub/a.mp4"]
    assert file_kind("a.PDF") == "pdf" and file_kind("x.txt") == "other"


def test_proxy_keeps_times_and_is_small(tmp_path: Path) -> None:
    from core.media import probe_video
    from tests.pages.media import make_video

    src = make_video(tmp_path / "v.mp4", seconds=4)
    info = probe_video(src)
    assert needs_proxy(info) is None
    assert "MiB" in needs_proxy(info, max_bytes=10)
    out = make_proxy(src, tmp_path / "p.mp4", max_height=90)
    p = probe_video(out)
    assert p.height == 90 and abs(p.duration - info.duration) < 0.2 and p.fps == 15
