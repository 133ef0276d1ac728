"""What every result-cache backend shares: keys, entries, statistics, the checksummed value envelope and
the `CacheBackend` interface (JSON and bytes access, the lock), plus content hashing.

The disk backend (`core.cache.store.ResultCache`) and the Redis backend
(`core.cache.redis_store.RedisResultCache`) both build on this module and never import each other.

Every value is wrapped in an envelope: ``VLS1`` + kind (``J`` JSON, ``B`` bytes) + sha256 of the payload +
payload. Nothing is ever pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

SCHEMA_VERSION = 1
"""Bumped whenever the shape of cached results changes; old entries then simply miss."""

_MAGIC = b"VLS1"
_KIND_JSON = b"J"
_KIND_BYTES = b"B"
_HEADER = len(_MAGIC) + 1 + 32


class CorruptEntry(IOError):
    """A cache entry could not be read back safely (tampered, truncated or pickled)."""


def _current_user() -> str | None:
    from core.auth import current_user

    return current_user()


def _envelope_head(kind: bytes, payload: Any) -> bytes:
    """What precedes the payload in an envelope: the magic, the kind and the payload's sha256."""
    return _MAGIC + kind + hashlib.sha256(payload).digest()


def _envelope(kind: bytes, payload: bytes) -> bytes:
    return _envelope_head(kind, payload) + payload


class EnvelopeReader:
    """The bytes of `_envelope(kind, payload)` read as a file, without joining them: the payload (e.g. a video
    part's features, ~85 MB) is handed out as views. Joining copied it holding the interpreter's lock (~0.1 s a
    part); sha256 lets go of it."""

    def __init__(self, kind: bytes, payload: Any) -> None:
        self._view = memoryview(payload).cast("B")
        self._head = _envelope_head(kind, self._view)
        self._at = -1  # -1: the head is next

    def __len__(self) -> int:
        return len(self._head) + len(self._view)

    def read(self, n: int = -1) -> Any:
        if self._at < 0:
            self._at = 0
            return self._head
        end = len(self._view) if n < 0 else min(len(self._view), self._at + n)
        chunk, self._at = self._view[self._at:end], end
        return chunk if len(chunk) else b""


def _open_envelope(blob: bytes, verified: bool = False) -> tuple[bytes, memoryview]:
    """(kind, payload) of a stored value, the payload a view into `blob` (no copy); CorruptEntry when it is not one
    or its checksum fails (`verified`: the reader checked it already, e.g. while fetching it: a large value is not
    hashed twice)."""
    view = memoryview(blob)
    if len(view) < _HEADER or bytes(view[:len(_MAGIC)]) != _MAGIC:
        raise CorruptEntry("not a VLScope cache envelope")
    kind = bytes(view[4:5])
    digest = bytes(view[5:_HEADER])
    payload = view[_HEADER:]
    if kind not in (_KIND_JSON, _KIND_BYTES):
        raise CorruptEntry(f"unknown value kind {kind!r}")
    if not verified and hashlib.sha256(payload).digest() != digest:
        raise CorruptEntry("checksum mismatch (the entry was truncated or changed on disk)")
    return kind, payload


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
    made_by: str | None = None
    """The signed-in user whose work stored it (None: nobody signed in, or stored before this was recorded)."""


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

    def _put(self, key: CacheKey, kind: bytes, payload: bytes,
             made_by: str | None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def lock(self, input_hash: str, stage: str,
             on_wait: Callable[[], None] | None = None) -> Any:  # pragma: no cover - abstract
        """A context manager held while one process computes `stage` of one input: every process sharing the
        cache waits for it (calling `on_wait` once when it has to), then finds the result in the cache."""
        raise NotImplementedError

    def contains(self, key: CacheKey) -> bool:  # pragma: no cover - abstract
        """True when an entry exists for `key`."""
        raise NotImplementedError

    def entries(self, input_hash: str | None = None) -> list[CacheEntry]:  # pragma: no cover - abstract
        """Every stored entry (or those of one input), newest first."""
        raise NotImplementedError

    def delete(self, key: CacheKey) -> bool:  # pragma: no cover - abstract
        """Delete one entry; True when it existed."""
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
        return json.loads(str(payload, "utf-8"))

    def put_json(self, key: CacheKey, value: Any) -> None:
        """Store a JSON-serialisable value (dataclasses: pass `asdict(obj)`)."""
        self._put(key, _KIND_JSON, json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"),
                  _current_user())

    def get_bytes(self, key: CacheKey) -> bytes | None:
        """The bytes stored under `key`, or None on a miss."""
        view = self.get_buffer(key)
        return None if view is None else bytes(view)

    def get_buffer(self, key: CacheKey) -> memoryview | None:
        """`get_bytes` without the copy: a read-only view of the stored bytes (large values: visual features)."""
        got = self._get(key)
        if got is None:
            return None
        kind, payload = got
        return memoryview(payload) if kind == _KIND_BYTES else None

    def put_bytes(self, key: CacheKey, value: bytes) -> None:
        """Store raw bytes (thumbnails, exports)."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError("put_bytes takes bytes")
        # a read-only buffer is stored as it is (no copy): a video part's features come as one (`to_buffer`)
        payload = value if isinstance(value, bytes) or (isinstance(value, memoryview) and value.readonly) \
            else bytes(value)
        self._put(key, _KIND_BYTES, payload, _current_user())


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
