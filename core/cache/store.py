"""The result store: content hash + stage + parameters + model => JSON or bytes, on disk.

Built on diskcache, with a storage layer that refuses pickle both ways (diskcache pickles by
default: CVE-2025-69872, code execution for whoever can write the cache folder). Every value
is wrapped in an envelope with a checksum; an entry that fails to read back counts as a miss,
is reported in `problems` and removed, and never raises.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_BINARY, MODE_RAW, UNKNOWN

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Bumped whenever the shape of cached results changes; old entries then simply miss."""

_MAGIC = b"VLS1"
_KIND_JSON = b"J"
_KIND_BYTES = b"B"
_HEADER = len(_MAGIC) + 1 + 32


class CorruptEntry(IOError):
    """A cache entry could not be read back safely (tampered, truncated or pickled)."""


def _envelope(kind: bytes, payload: bytes) -> bytes:
    return _MAGIC + kind + hashlib.sha256(payload).digest() + payload


def _open_envelope(blob: bytes) -> tuple[bytes, bytes]:
    if len(blob) < _HEADER or not blob.startswith(_MAGIC):
        raise CorruptEntry("not a VLScope cache envelope")
    kind = blob[4:5]
    digest = blob[5:_HEADER]
    payload = blob[_HEADER:]
    if kind not in (_KIND_JSON, _KIND_BYTES):
        raise CorruptEntry(f"unknown value kind {kind!r}")
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptEntry("checksum mismatch (the entry was truncated or changed on disk)")
    return kind, payload


class SafeDisk(diskcache.Disk):
    """A diskcache storage layer that only stores str keys and bytes values, never pickle."""

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.problems: list[str] = []

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise TypeError(f"cache keys must be str, not {type(key).__name__}")
        return key, True

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise CorruptEntry("refusing to unpickle a cache key")
        return key

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, str | None, Any]:
        if read or type(value) is not bytes:
            raise TypeError("cache values must be bytes (JSON is encoded before storing); pickle is never used")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode not in (MODE_RAW, MODE_BINARY):
            self.problems.append(f"entry stored with mode {mode} (pickle or text) refused")
            raise CorruptEntry("refusing a non-bytes cache entry")
        try:
            blob = super().fetch(mode, filename, value, False)
        except OSError as exc:
            self.problems.append(f"value file unreadable: {exc}")
            raise CorruptEntry(str(exc)) from exc
        try:
            kind, payload = _open_envelope(bytes(blob))
            if kind == _KIND_JSON:
                json.loads(payload.decode("utf-8"))
        except (CorruptEntry, UnicodeDecodeError, ValueError) as exc:
            self.problems.append(str(exc))
            raise CorruptEntry(str(exc)) from exc
        return blob


@dataclass(frozen=True)
class CacheKey:
    """Identifies one result: which input, which stage, with which parameters and model."""

    input_hash: str
    stage: str
    params_digest: str

    def __str__(self) -> str:
        return f"v{SCHEMA_VERSION}/{self.input_hash}/{self.stage}/{self.params_digest}"

    @classmethod
    def parse(cls, text: str) -> "CacheKey | None":
        parts = text.split("/")
        if len(parts) != 4 or parts[0] != f"v{SCHEMA_VERSION}":
            return None
        return cls(parts[1], parts[2], parts[3])


@dataclass
class CacheEntry:
    """One stored result as listed by `ResultCache.entries`."""

    key: str
    input_hash: str
    stage: str
    size_bytes: int
    stored_at: float


@dataclass
class CacheStats:
    """Counts and sizes of the result cache."""

    directory: str
    entries: int
    inputs: int
    volume_bytes: int
    size_limit_bytes: int
    hits: int
    misses: int
    corrupt: int
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal parameters give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def make_key(
    input_hash: str,
    stage: str,
    params: dict[str, Any] | None = None,
    model: str | None = None,
    precision: str | None = None,
) -> CacheKey:
    """The key of a result: input content hash + stage + parameters + model and precision + schema."""
    if not input_hash or "/" in input_hash:
        raise ValueError("input_hash must be a non-empty content hash")
    if not stage or "/" in stage:
        raise ValueError("stage must be a non-empty name without '/'")
    material = canonical_json(
        {"params": params or {}, "model": model, "precision": precision, "schema": SCHEMA_VERSION}
    )
    return CacheKey(input_hash, stage, hashlib.sha256(material.encode("utf-8")).hexdigest()[:24])


class CacheBackend:
    """What every result-cache backend offers (disk: ResultCache; Redis: RedisResultCache).

    JSON and bytes access is shared here; a backend provides `_get`/`_put` and the listing methods.
    """

    def _get(self, key: CacheKey) -> tuple[bytes, bytes] | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _put(self, key: CacheKey, kind: bytes, payload: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def contains(self, key: CacheKey) -> bool:  # pragma: no cover - abstract
        """True when an entry exists for `key`."""
        raise NotImplementedError

    def entries(self, input_hash: str | None = None) -> list[CacheEntry]:  # pragma: no cover - abstract
        """Every stored entry (or those of one input), newest first."""
        raise NotImplementedError

    def delete_input(self, input_hash: str) -> int:  # pragma: no cover - abstract
        """Delete every entry of one input; returns how many were removed."""
        raise NotImplementedError

    def clear(self) -> int:  # pragma: no cover - abstract
        """Delete every entry; returns how many were removed."""
        raise NotImplementedError

    def stats(self) -> CacheStats:  # pragma: no cover - abstract
        """Counts of entries, inputs, bytes used, hits, misses and unreadable entries."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        """Release connections and files."""

    def __enter__(self) -> "CacheBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_json(self, key: CacheKey) -> Any | None:
        """The JSON value stored under `key`, or None on a miss (or an unreadable entry)."""
        got = self._get(key)
        if got is None:
            return None
        kind, payload = got
        if kind != _KIND_JSON:
            return None
        return json.loads(payload.decode("utf-8"))

    def put_json(self, key: CacheKey, value: Any) -> None:
        """Store a JSON-serialisable value (dataclasses: pass `asdict(obj)`)."""
        self._put(key, _KIND_JSON, json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"))

    def get_bytes(self, key: CacheKey) -> bytes | None:
        """The bytes stored under `key`, or None on a miss."""
        got = self._get(key)
        if got is None:
            return None
        kind, payload = got
        return payload if kind == _KIND_BYTES else None

    def put_bytes(self, key: CacheKey, value: bytes) -> None:
        """Store raw bytes (thumbnails, exports)."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("put_bytes takes bytes")
        self._put(key, _KIND_BYTES, bytes(value))


class ResultCache(CacheBackend):
    """Disk-backed result store; thread- and process-safe (SQLite underneath).

    Values are JSON-able objects (`get_json`/`put_json`) or raw bytes (`get_bytes`/`put_bytes`).
    """

    def __init__(self, directory: str | os.PathLike[str], size_limit_bytes: int = 20 * 1024**3) -> None:
        self.directory = Path(directory).expanduser().resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._secure_folder()
        self._cache = diskcache.Cache(
            str(self.directory),
            disk=SafeDisk,
            size_limit=int(size_limit_bytes),
            eviction_policy="least-recently-stored",
            statistics=True,
            tag_index=True,
            cull_limit=0,  # diskcache culls 10 rows at a time (all of a few large ones): we evict one by one
        )
        self._lock = threading.Lock()
        self._corrupt = 0

    # -- housekeeping -------------------------------------------------------------------
    def _secure_folder(self) -> None:
        """Make the folder owner-only (0700): nobody else may read or plant entries."""
        mode = stat.S_IMODE(self.directory.stat().st_mode)
        if mode != 0o700:
            os.chmod(self.directory, 0o700)

    def close(self) -> None:
        self._cache.close()

    def __enter__(self) -> "ResultCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def problems(self) -> list[str]:
        """Problems met while reading entries (each was counted as a miss and removed)."""
        return list(self._cache.disk.problems)

    # -- raw get/put --------------------------------------------------------------------
    def _get(self, key: CacheKey) -> tuple[bytes, bytes] | None:
        text = str(key)
        before = len(self._cache.disk.problems)
        try:
            blob = self._cache.get(text, default=None, retry=True)
        except (CorruptEntry, OSError, ValueError) as exc:  # belt and braces: never crash on a read
            self._cache.disk.problems.append(str(exc))
            blob = None
        if len(self._cache.disk.problems) > before:
            with self._lock:
                self._corrupt += 1
            log.warning("cache entry %s was unreadable and was removed: %s", text, self._cache.disk.problems[-1])
            try:
                self._cache.delete(text, retry=True)
            except Exception:  # noqa: BLE001 - removal is best effort
                pass
            return None
        if blob is None:
            return None
        return _open_envelope(blob)

    def _put(self, key: CacheKey, kind: bytes, payload: bytes) -> None:
        self._cache.set(str(key), _envelope(kind, payload), tag=key.input_hash, retry=True)
        self._enforce_limit(keep=str(key))

    def _enforce_limit(self, keep: str) -> None:
        """Evict least recently stored entries, one at a time, until the cache fits its size limit."""
        limit = self._cache.size_limit
        while self._cache.volume() > limit:
            row = self._cache._sql(
                "SELECT key FROM Cache WHERE key != ? ORDER BY store_time LIMIT 1", (keep,)
            ).fetchone()
            if row is None:
                break  # only the new entry is left; keep it even if it alone exceeds the limit
            self._cache.delete(row[0], retry=True)

    # -- public API ---------------------------------------------------------------------
    def contains(self, key: CacheKey) -> bool:
        """True when an entry exists for `key` (does not count as a hit or a miss)."""
        return str(key) in self._cache

    def entries(self, input_hash: str | None = None) -> list[CacheEntry]:
        """Every stored entry (or those of one input), newest first."""
        rows = self._cache._sql("SELECT key, size, store_time FROM Cache WHERE raw = 1").fetchall()
        out: list[CacheEntry] = []
        for key_text, size, stored in rows:
            parsed = CacheKey.parse(str(key_text))
            if parsed is None:
                continue
            if input_hash is not None and parsed.input_hash != input_hash:
                continue
            # size is the file size for values kept in files; 0 for values inside the database
            out.append(CacheEntry(str(key_text), parsed.input_hash, parsed.stage, int(size or 0), float(stored or 0)))
        out.sort(key=lambda e: e.stored_at, reverse=True)
        return out

    def delete_input(self, input_hash: str) -> int:
        """Delete every entry of one input; returns how many were removed."""
        return int(self._cache.evict(input_hash, retry=True))

    def clear(self) -> int:
        """Delete every entry; returns how many were removed."""
        return int(self._cache.clear(retry=True))

    def stats(self) -> CacheStats:
        """Counts of entries, inputs, bytes used, hits, misses and unreadable entries."""
        hits, misses = self._cache.stats(enable=True)
        entries = self.entries()
        return CacheStats(
            directory=str(self.directory),
            entries=len(entries),
            inputs=len({e.input_hash for e in entries}),
            volume_bytes=int(self._cache.volume()),
            size_limit_bytes=int(self._cache.size_limit),
            hits=int(hits),
            misses=int(misses),
            corrupt=self._corrupt,
            problems=self.problems[-20:],
        )


def hash_bytes(data: bytes) -> str:
    """sha256 hex digest of `data`."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path: str | os.PathLike[str], chunk_size: int = 4 * 1024 * 1024) -> str:
    """sha256 hex digest of a file's bytes, read in chunks (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def open_cache(settings: Any) -> CacheBackend:
    """The result cache described by `settings`: the disk cache (cache_dir, cache_size_limit_gb), or with
    `cache_backend` "redis" a RedisResultCache at `redis_url` (same methods; CacheUnavailable, a
    SettingsError naming the URL and the fix, when the server cannot be reached)."""
    if getattr(settings, "cache_backend", "disk") == "redis":
        from core.cache.redis_store import RedisResultCache

        return RedisResultCache(settings.redis_url)
    return ResultCache(settings.cache_dir, int(settings.cache_size_limit_gb * 1024**3))


