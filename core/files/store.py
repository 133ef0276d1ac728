"""Uploads and server files: every file the dashboard analyses ends up as a path on disk plus its sha256.

Uploads are copied to ``<cache_dir>/uploads/<sha256><suffix>`` in chunks while being hashed (one
pass, bounded memory). Files too large for a browser upload are opened by path, but only from the
allowed server folder (``VLSCOPE_MEDIA_ROOT``): paths that climb out of it (``..``) or symlinks that
point out of it are refused.

Uploads and proxies (``<cache_dir>/proxies``) together are kept within the cache's size limit
(``cache_size_limit_gb``, counted apart from the result cache): least recently used first out, never
a file in use (held with `using`, in any process) nor one used in the last `RECENT_S` seconds.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from core.errors import UserError

log = logging.getLogger(__name__)

MEDIA_ROOT_ENV = "VLSCOPE_MEDIA_ROOT"
CHUNK = 4 * 1024 * 1024
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".jfif", ".pbm", ".pgm", ".ppm"}
DOCUMENT_SUFFIXES = {".pdf"}
FILE_FOLDERS = ("uploads", "proxies")  # under cache_dir: the files kept within the size limit
RECENT_S = 300.0  # a file used this recently is likely open in a page: never evicted
PATH_MAX = 4096
NAME_MAX = 255


class FileError(UserError, ValueError):
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


def store_upload(stream: BinaryIO, name: str, cache_dir: str | os.PathLike[str], max_bytes: int,
                 limit_bytes: int | None = None) -> StoredFile:
    """Copy an uploaded file to disk in chunks, hashing it on the way; FileError when it is empty or too large.

    The same content uploaded twice is stored once (named by its sha256). Afterwards uploads and
    proxies are evicted down to `limit_bytes` (default: the `cache_size_limit_gb` setting), this
    upload excepted.
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
        try:
            os.utime(final)  # stored before: now its last use
            os.unlink(tmp_name)
        except FileNotFoundError:
            os.replace(tmp_name, final)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    with using(final):
        evict_files(cache_dir, limit_bytes)
    return StoredFile(str(final), display, size, sha, file_kind(display), "upload")


def file_limit_bytes(settings: Any) -> int:
    """The size limit of uploads and proxies: the `cache_size_limit_gb` setting in bytes."""
    return int(settings.cache_size_limit_gb * 1024**3)


@contextmanager
def using(path: str | os.PathLike[str]) -> Iterator[None]:
    """Mark `path` as in use while the block runs (a shared lock): `evict_files` of any process leaves it alone."""
    try:
        fd: int | None = os.open(path, os.O_RDONLY)
    except OSError:  # gone or unreadable: nothing to protect
        fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _kept_files(cache_dir: Path) -> Iterator[tuple[Path, os.stat_result]]:
    for sub in FILE_FOLDERS:
        try:
            entries = list(os.scandir(cache_dir / sub))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    yield Path(entry.path), entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue


def _being_written(path: Path) -> bool:
    return path.name.startswith(".") or path.name.endswith(".part")


def evict_files(cache_dir: str | os.PathLike[str], limit_bytes: int | None = None,
                recent_s: float = RECENT_S) -> list[Path]:
    """Delete uploads and proxies, least recently used first, until together they fit in `limit_bytes`.

    `limit_bytes` None: nothing is evicted (callers pass `file_limit_bytes(settings)`). Never deleted: files held with `using`
    (by any process), files being written, and files used in the last `recent_s` seconds. Returns the
    deleted paths.
    """
    if limit_bytes is None:
        return []
    limit = int(limit_bytes)
    root = Path(cache_dir).expanduser()
    files = list(_kept_files(root))
    total = sum(st.st_size for _, st in files)
    if total <= limit:
        return []
    now = time.time()
    removed: list[Path] = []
    for path, st in sorted(files, key=lambda f: f[1].st_mtime):
        if total <= limit:
            break
        if _being_written(path) or now - st.st_mtime < recent_s:
            continue
        if _remove_unless_used(path):
            total -= st.st_size
            removed.append(path)
    if removed:
        log.info("size limit of uploads and proxies (%.2f GiB): removed %d least recently used file(s)",
                 limit / 1024**3, len(removed))
    return removed


def _remove_unless_used(path: Path) -> bool:
    """Delete `path` unless some process holds it with `using`; True when deleted."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # gone meanwhile, or not ours to read
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            os.unlink(path)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)


def media_root(settings: Any = None, environ: dict[str, str] | None = None) -> Path | None:
    """The allowed server folder (the `media_root` setting, or VLSCOPE_MEDIA_ROOT of `environ`), resolved; None when
    unset or missing."""
    if environ is not None:
        raw = environ.get(MEDIA_ROOT_ENV, "").strip()
    else:
        configured = getattr(settings, "media_root", None)
        raw = str(configured) if configured else ""
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
    shown = _shorten(text)
    longest = max((len(part.encode("utf-8", "surrogateescape")) for part in Path(text).parts), default=0)
    if len(text.encode("utf-8", "surrogateescape")) > PATH_MAX or longest > NAME_MAX:
        raise FileError(f"The path {shown} is too long ({len(text)} characters).",
                        f"Paths can have at most {PATH_MAX} bytes and each folder or file name at most {NAME_MAX}; "
                        "give the path of a file inside the media folder.")
    root = root.resolve()
    candidate = Path(text).expanduser()
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        resolved = candidate.resolve()  # follows every symlink on the way
        if resolved != root and root not in resolved.parents:
            raise FileError(f"{shown} is outside the allowed media folder {root}; only files inside it can be opened "
                            "(no '..' and no links pointing out of it).")
        if not resolved.exists():
            raise FileError(f"{shown} does not exist in the media folder {root}; check the name.")
        if not resolved.is_file():
            raise FileError(f"{shown} is not a file; give the path of a video, image or PDF.")
    except (OSError, RuntimeError) as exc:  # too long once links are followed, a link loop, no permission
        raise FileError(f"{shown} cannot be opened ({_os_reason(exc)}).",
                        "Check the path, its links and its permissions in the media folder.") from None
    return resolved


def _shorten(text: str, keep: int = 60) -> str:
    return text if len(text) <= 2 * keep else f"{text[:keep]}…{text[-keep:]}"


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno) if exc.errno != errno.ENAMETOOLONG else "the path is too long"
    return "a symbolic link loop" if isinstance(exc, RuntimeError) else type(exc).__name__


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
    if root is None:
        raise FileError(f"opening files by path is off: set {MEDIA_ROOT_ENV} to the server folder that holds "
                        "your media and restart the dashboard.")
    resolved = resolve_in_root(path, root)
    try:
        return StoredFile(str(resolved), resolved.name, resolved.stat().st_size, _hash_once(resolved),
                          file_kind(resolved.name), "server")
    except OSError as exc:  # no read permission, removed meanwhile
        raise FileError(f"{resolved.name} cannot be read ({_os_reason(exc)}).",
                        "Check that the file exists and that the server may read it.") from None


def list_server_files(root: Path | None = None, kinds: tuple[str, ...] = ("video", "image", "pdf"),
                      limit: int = 500) -> list[str]:
    """Paths (relative to the media folder) of the files of `kinds` in it, sorted; symlinks leading out are skipped."""
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
