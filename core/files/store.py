"""Uploads and server files: every file the dashboard analyses ends up as a path on disk plus its sha256.

Uploads are copied to ``<cache_dir>/uploads/<sha256><suffix>`` in chunks while being hashed (one
pass, bounded memory). Files too large for a browser upload are opened by path, but only from the
allowed server folder (``VLSCOPE_MEDIA_ROOT``): paths that climb out of it (``..``) or symlinks that
point out of it are refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

MEDIA_ROOT_ENV = "VLSCOPE_MEDIA_ROOT"
CHUNK = 4 * 1024 * 1024
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".jfif", ".pbm", ".pgm", ".ppm"}
DOCUMENT_SUFFIXES = {".pdf"}


class FileError(ValueError):
    """A file a user gave cannot be used (too large, outside the allowed folder, missing); says why and what to do."""


@dataclass
class StoredFile:
    """A file on disk ready for analysis: where it is, its original name, size, sha256 and kind."""

    path: str
    name: str
    size_bytes: int
    sha256: str
    kind: str  # "video", "image", "pdf" or "other"
    origin: str = "upload"  # "upload" or "server"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


def file_kind(name: str) -> str:
    """'video', 'image', 'pdf' or 'other', from the file name's suffix."""
    suffix = Path(name).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in DOCUMENT_SUFFIXES:
        return "pdf"
    return "other"


def upload_dir(cache_dir: str | os.PathLike[str]) -> Path:
    """The folder uploads are kept in (created owner-only)."""
    folder = Path(cache_dir).expanduser() / "uploads"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def _safe_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix.isascii() and suffix[1:].isalnum() and len(suffix) <= 8 else ""


def store_upload(stream: BinaryIO, name: str, cache_dir: str | os.PathLike[str], max_bytes: int) -> StoredFile:
    """Copy an uploaded file to disk in chunks, hashing it on the way; FileError when it is empty or too large.

    The same content uploaded twice is stored once (named by its sha256).
    """
    folder = upload_dir(cache_dir)
    display = Path(name or "upload").name or "upload"
    digest = hashlib.sha256()
    size = 0
    if hasattr(stream, "seek"):
        try:
            stream.seek(0)
        except (OSError, ValueError):
            pass
    fd, tmp_name = tempfile.mkstemp(prefix=".incoming-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise FileError(
                        f"{display} is larger than the upload limit of {max_bytes / 1024**2:.0f} MiB; raise "
                        "VLSCOPE_MAX_UPLOAD_MB, or put the file in the server's media folder and open it by path."
                    )
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise FileError(f"{display} is empty (0 bytes); the upload did not finish. Upload it again.")
        sha = digest.hexdigest()
        final = folder / f"{sha}{_safe_suffix(display)}"
        if final.exists():
            os.unlink(tmp_name)
        else:
            os.replace(tmp_name, final)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return StoredFile(str(final), display, size, sha, file_kind(display), "upload")


def media_root(environ: dict[str, str] | None = None) -> Path | None:
    """The allowed server folder (setting `media_root`, env VLSCOPE_MEDIA_ROOT), resolved; None when unset or missing."""
    if environ is None:
        from core.settings import SettingsError, load_settings

        try:
            configured = load_settings().media_root
        except SettingsError:
            configured = None
        raw = str(configured) if configured else ""
    else:
        raw = environ.get(MEDIA_ROOT_ENV, "").strip()
    if not raw:
        return None
    root = Path(raw).expanduser().resolve()
    return root if root.is_dir() else None


def resolve_in_root(path: str | os.PathLike[str], root: Path) -> Path:
    """`path` (relative to `root`, or absolute) resolved, or FileError when it leaves `root` (.. or symlinks)."""
    text = str(path).strip()
    if not text:
        raise FileError("give a file path inside the media folder")
    if "\x00" in text:
        raise FileError("the path holds a NUL character; give a plain file path")
    root = root.resolve()
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = root / candidate
    resolved = candidate.resolve()  # follows every symlink on the way
    if resolved != root and root not in resolved.parents:
        raise FileError(f"{text} is outside the allowed media folder {root}; only files inside it can be opened "
                        "(no '..' and no links pointing out of it).")
    if not resolved.exists():
        raise FileError(f"{text} does not exist in the media folder {root}; check the name.")
    if not resolved.is_file():
        raise FileError(f"{text} is not a file; give the path of a video, image or PDF.")
    return resolved


_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _hash_once(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    sha = digest.hexdigest()
    with _HASH_LOCK:
        _HASHES[key] = sha
    return sha


def open_server_file(path: str | os.PathLike[str], root: Path | None = None) -> StoredFile:
    """A file from the allowed server folder (hashed once per size and modification time); FileError otherwise."""
    root = root if root is not None else media_root()
    if root is None:
        raise FileError(f"opening files by path is off: set {MEDIA_ROOT_ENV} to the server folder that holds "
                        "your media and restart the dashboard.")
    resolved = resolve_in_root(path, root)
    return StoredFile(str(resolved), resolved.name, resolved.stat().st_size, _hash_once(resolved),
                      file_kind(resolved.name), "server")


def list_server_files(root: Path | None = None, kinds: tuple[str, ...] = ("video", "image", "pdf"),
                      limit: int = 500) -> list[str]:
    """Paths (relative to the media folder) of the files of `kinds` in it, sorted; symlinks leading out are skipped."""
    root = root if root is not None else media_root()
    if root is None:
        return []
    root = root.resolve()
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            if fname.startswith(".") or file_kind(fname) not in kinds:
                continue
            full = Path(dirpath) / fname
            try:
                resolved = full.resolve()
            except OSError:
                continue
            if root not in resolved.parents or not resolved.is_file():
                continue
            found.append(str(full.relative_to(root)))
            if len(found) >= limit:
                return found
    return found
