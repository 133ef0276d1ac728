"""The result store: content hash + stage + parameters + model => JSON or bytes, on disk.

Built on diskcache, with a storage layer that refuses pickle both ways (diskcache pickles by
default: CVE-2025-69872, code execution for whoever can write the cache folder). Every value
is wrapped in an envelope with a checksum; an entry that fails to read back counts as a miss,
is reported in `problems` and removed, and never raises.

A tampered `cache.db` is handled the same way: rows with a key that is not text, a pickled key,
an unknown storage mode, an odd file name or bad numbers are misses, counted as corrupt and removed
(never unpickled, and no file outside the folder is read or deleted); rows of diskcache's own
Settings table that are unknown or hold an invalid value are detected before diskcache reads them
(they would otherwise run as SQLite PRAGMAs or replace attributes) and reset, with a problem saying so.

Each entry records who made it (`CacheEntry.made_by`, from `core.auth.current_user()` at write time) in
a side table of `cache.db`; `lock(input_hash, stage)` is a file lock in the folder, shared by processes.

Keys, the envelope and the `CacheBackend` interface live in `core.cache.base` (shared with the Redis
backend, which this module never imports).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import sqlite3
import stat
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import diskcache
from diskcache.core import DEFAULT_SETTINGS, EVICTION_POLICY, METADATA, MODE_BINARY, MODE_RAW, UNKNOWN

from core.cache.base import (
    _KIND_JSON,
    CacheBackend,
    CacheEntry,
    CacheKey,
    CacheStats,
    CorruptEntry,
    EnvelopeReader,
    _envelope,
    _open_envelope,
)
from core.errors import UserError

log = logging.getLogger(__name__)


class CacheDamaged(UserError):
    """The cache folder cannot be used as it is (its database is not SQLite); the message names the fix."""


STREAM_MIN_BYTES = 1 << 20
"""Values at least this large are written to their file from views of the payload (`EnvelopeReader`)."""

_VALUE_FILE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val$")
"""The only value file names diskcache makes (two levels of hex folders): anything else was planted."""

_LOCK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_JOURNAL_MODES = {"delete", "truncate", "persist", "memory", "wal", "off"}


def _int_in(low: int | None, high: int | None) -> Callable[[Any], bool]:
    def ok(value: Any) -> bool:
        return type(value) is int and (low is None or value >= low) and (high is None or value <= high)
    return ok


_SETTING_CHECKS: dict[str, Callable[[Any], bool]] = {
    "statistics": _int_in(0, 1),
    "tag_index": _int_in(0, 1),
    "eviction_policy": lambda v: isinstance(v, str) and v in EVICTION_POLICY,
    "size_limit": _int_in(0, None),
    "cull_limit": _int_in(0, None),
    "sqlite_auto_vacuum": _int_in(0, 2),
    "sqlite_cache_size": _int_in(None, None),
    "sqlite_journal_mode": lambda v: isinstance(v, str) and v.lower() in _JOURNAL_MODES,
    "sqlite_mmap_size": _int_in(0, None),
    "sqlite_synchronous": _int_in(0, 3),
    "disk_min_file_size": _int_in(0, None),
    "disk_pickle_protocol": _int_in(0, 5),
    **{name: _int_in(0, None) for name in METADATA},
}
"""Every row diskcache's Settings table may hold, with the values it may take (checked before diskcache reads it)."""


def _describe(value: Any) -> str:
    """A short, safe description of an untrusted value for a problem message."""
    if isinstance(value, bytes):
        what = "a pickle" if value[:1] == b"\x80" else "binary data"
        return f"{what} of {len(value)} bytes"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_settings_table(db_path: Path) -> tuple[list[str], bool]:
    """Find and remove rows of diskcache's Settings table that are unknown or hold an invalid value, before
    diskcache reads them (it runs `sqlite_*` rows as PRAGMAs, passes `disk_*` rows to the storage layer and
    sets every row as an attribute). Returns the problems found and whether the counters must be rebuilt.
    Nothing in the table is run or unpickled; CacheDamaged when the file is not a SQLite database."""
    if not db_path.is_file():
        return [], False
    problems: list[str] = []
    bad: list[int] = []
    counters = False
    con = sqlite3.connect(str(db_path), timeout=60, isolation_level=None)
    try:
        try:
            rows = con.execute("SELECT rowid, key, value FROM Settings").fetchall()
        except sqlite3.OperationalError:
            return [], False  # no Settings table yet: diskcache creates it
        for rowid, key, value in rows:
            check = _SETTING_CHECKS.get(key) if isinstance(key, str) else None
            if check is None:
                problems.append(f"cache.db: unknown setting {_describe(key)} (not one diskcache writes) was removed")
                bad.append(rowid)
            elif not check(value):
                problems.append(f"cache.db: setting {key} held an invalid value ({_describe(value)}); it was reset")
                bad.append(rowid)
                counters = counters or key in METADATA
        if bad:
            con.execute("BEGIN IMMEDIATE")
            con.executemany("DELETE FROM Settings WHERE rowid = ?", [(r,) for r in bad])
            con.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise CacheDamaged(f"The result cache database {db_path} cannot be read ({exc}): it was replaced or damaged.",
                           f"Move the folder {db_path.parent} away (or delete it) and the cache is rebuilt empty, or "
                           "set VLSCOPE_CACHE_DIR to another folder.") from exc
    finally:
        con.close()
    return problems, counters


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
        # bytes, or the envelope of a large payload read out as a file (its own value file, like large bytes)
        if type(value) is not (EnvelopeReader if read else bytes):
            raise TypeError("cache values must be bytes (JSON is encoded before storing); pickle is never used")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode not in (MODE_RAW, MODE_BINARY):
            self.problems.append(f"entry stored with mode {_describe(mode)} (pickle or text) refused")
            raise CorruptEntry("refusing a non-bytes cache entry")
        if mode == MODE_BINARY and not (isinstance(filename, str) and _VALUE_FILE.match(filename)):
            self.problems.append(f"entry names the value file {_describe(filename)}, not one the cache makes; refused")
            raise CorruptEntry("refusing a planted value file name")
        if mode == MODE_RAW and not isinstance(value, bytes):
            self.problems.append(f"entry holds {type(value).__name__}, not bytes; refused")
            raise CorruptEntry("refusing a non-bytes cache entry")
        try:
            blob = super().fetch(mode, filename, value, read)
        except OSError as exc:
            self.problems.append(f"value file unreadable: {exc}")
            raise CorruptEntry(str(exc)) from exc
        if read:  # a value file's handle (a small value's bytes): the caller reads and checks it (`check`)
            return blob
        return self.check(blob)

    def check(self, blob: Any) -> Any:
        """`blob` when it is a sound envelope (a JSON one holding JSON); CorruptEntry (and a problem) else."""
        try:
            kind, payload = _open_envelope(bytes(blob))
            if kind == _KIND_JSON:
                json.loads(str(payload, "utf-8"))
        except (CorruptEntry, UnicodeDecodeError, ValueError) as exc:
            self.problems.append(str(exc))
            raise CorruptEntry(str(exc)) from exc
        return blob

    def remove(self, file_path: Any) -> None:
        """Remove a value file, only when its name is one the cache makes (a planted row never deletes
        a file outside the folder)."""
        if isinstance(file_path, str) and _VALUE_FILE.match(file_path):
            super().remove(file_path)


class ResultCache(CacheBackend):
    """Disk-backed result store; thread- and process-safe (SQLite underneath).

    Values are JSON-able objects (`get_json`/`put_json`) or raw bytes (`get_bytes`/`put_bytes`).
    """

    def __init__(self, directory: str | os.PathLike[str], size_limit_bytes: int = 20 * 1024**3) -> None:
        self.directory = Path(directory).expanduser().resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._secure_folder()
        settings_problems, rebuild_counters = check_settings_table(self.directory / "cache.db")
        for problem in settings_problems:
            log.warning("result cache %s: %s", self.directory, problem)
        # every setting is given here, so a value found in the folder's Settings table is never used
        self._cache = diskcache.Cache(
            str(self.directory),
            disk=SafeDisk,
            **{
                **DEFAULT_SETTINGS,
                "size_limit": int(size_limit_bytes),
                "eviction_policy": "least-recently-stored",
                "statistics": 1,
                "tag_index": 1,
                "cull_limit": 0,  # diskcache culls 10 rows at a time (all of a few large ones): we evict one by one
            },
        )
        self._cache.disk.problems.extend(settings_problems)
        self._lock = threading.Lock()
        self._corrupt = len(settings_problems)
        self._sql(f"CREATE TABLE IF NOT EXISTS {_META_TABLE} (key TEXT PRIMARY KEY, made_by TEXT)")
        self._sql(f"CREATE TRIGGER IF NOT EXISTS {_META_TABLE}_delete AFTER DELETE ON Cache FOR EACH ROW BEGIN"
                  f" DELETE FROM {_META_TABLE} WHERE key = OLD.key; END")
        if rebuild_counters:
            self._rebuild_counters()

    # -- housekeeping -------------------------------------------------------------------
    def _secure_folder(self) -> None:
        """Make the folder owner-only (0700): nobody else may read or plant entries."""
        mode = stat.S_IMODE(self.directory.stat().st_mode)
        if mode != 0o700:
            os.chmod(self.directory, 0o700)

    def _sql(self, statement: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """Plain SQL on this thread's connection to cache.db (the side table and the row checks need it)."""
        return self._cache._sql(statement, params)  # noqa: SLF001

    def _rebuild_counters(self) -> None:
        """Recount entries and bytes from the Cache table (after a counter row was found tampered)."""
        with self._cache.transact(retry=True):
            self._sql("UPDATE Settings SET value = (SELECT COUNT(*) FROM Cache) WHERE key = 'count'")
            self._sql("UPDATE Settings SET value = (SELECT COALESCE(SUM(CASE WHEN typeof(size) = 'integer' "
                      "THEN size ELSE 0 END), 0) FROM Cache) WHERE key = 'size'")

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

    def _problem(self, text: str) -> None:
        """A tampered or unreadable entry: counted as corrupt and reported."""
        with self._lock:
            self._corrupt += 1
        self._cache.disk.problems.append(text)
        log.warning("result cache %s: %s", self.directory, text)

    def _drop_row(self, rowid: int, filename: Any) -> None:
        """Delete one row of the Cache table by rowid (its value file too, when it is one the cache made)."""
        with self._cache.transact(retry=True):
            self._sql("DELETE FROM Cache WHERE rowid = ?", (rowid,))
        self._cache.disk.remove(filename)

    def _volume(self) -> int:
        """Bytes used; a tampered size counter is rebuilt rather than crashing."""
        try:
            return int(self._cache.volume())
        except (TypeError, ValueError):
            self._problem("cache.db: the size counter held an invalid value; it was rebuilt")
            self._rebuild_counters()
            return int(self._cache.volume())

    # -- raw get/put --------------------------------------------------------------------
    def _get(self, key: CacheKey) -> tuple[bytes, bytes] | None:
        text = str(key)
        before = len(self._cache.disk.problems)
        blob, counted = None, False
        try:
            # diskcache fetches inside a write transaction (its hit counters): only the value file is opened there;
            # it is read and its checksum checked outside, so several readers (a video's feature parts) run at once
            handle = self._cache.get(text, default=None, read=True, retry=True)
            blob, counted = None, handle is not None  # diskcache counted a hit
            if isinstance(handle, (bytes, bytearray)):  # a small value, held in the row itself
                blob = self._cache.disk.check(handle)
            elif handle is not None:
                with handle:
                    blob = self._cache.disk.check(handle.read())
        except (CorruptEntry, OSError, ValueError, TypeError) as exc:  # belt and braces: never crash on a read
            if not isinstance(exc, CorruptEntry) or len(self._cache.disk.problems) == before:
                self._cache.disk.problems.append(str(exc))
            if blob is None and counted:  # found unreadable after diskcache counted it a hit: a miss after all
                with self._cache.transact(retry=True):
                    self._sql('UPDATE Settings SET value = value - 1 WHERE key = "hits"')
                    self._sql('UPDATE Settings SET value = value + 1 WHERE key = "misses"')
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
        return _open_envelope(blob, verified=True)  # `check` verified it

    def _put(self, key: CacheKey, kind: bytes, payload: bytes, made_by: str | None) -> None:
        text = str(key)
        with self._cache.transact(retry=True):
            if len(payload) < STREAM_MIN_BYTES:
                self._cache.set(text, _envelope(kind, payload), tag=key.input_hash, retry=True)
            else:  # written to its value file from views of the payload, never joined into one more copy
                self._cache.set(text, EnvelopeReader(kind, payload), read=True, tag=key.input_hash, retry=True)
            if made_by:
                self._sql(f"INSERT OR REPLACE INTO {_META_TABLE} (key, made_by) VALUES (?, ?)", (text, made_by))
            else:
                self._sql(f"DELETE FROM {_META_TABLE} WHERE key = ?", (text,))
        self._enforce_limit(keep=text)

    def _enforce_limit(self, keep: str) -> None:
        """Evict least recently stored entries, one at a time, until the cache fits its size limit."""
        limit = self._cache.size_limit
        while self._volume() > limit:
            row = self._sql(
                "SELECT rowid, filename FROM Cache WHERE NOT (key = ? AND raw = 1) ORDER BY store_time LIMIT 1", (keep,)
            ).fetchone()
            if row is None:
                break  # only the new entry is left; keep it even if it alone exceeds the limit
            self._drop_row(row[0], row[1])

    # -- public API ---------------------------------------------------------------------
    def contains(self, key: CacheKey) -> bool:
        """True when an entry exists for `key` (does not count as a hit or a miss)."""
        return str(key) in self._cache

    @contextmanager
    def lock(self, input_hash: str, stage: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the lock of (input, stage) shared by every process using this folder: an exclusive `flock` on
        `locks/<input>.<stage>.lock` (released by the system if the process dies)."""
        for part in (input_hash, stage):
            if not _LOCK_NAME.match(part):
                raise ValueError(f"{part!r} cannot name a lock")
        folder = self.directory / "locks"
        folder.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(folder / f"{input_hash}.{stage}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _rows(self) -> list[tuple[Any, ...]]:
        """Every row of the Cache table with its recorded user; tampered rows are removed and counted."""
        rows = self._sql(
            f"SELECT c.rowid, c.key, c.raw, c.mode, c.filename, typeof(c.value), c.size, c.store_time, "
            f"CASE WHEN c.filename IS NULL THEN length(c.value) ELSE c.size END, m.made_by "
            f"FROM Cache c LEFT JOIN {_META_TABLE} m ON m.key = c.key").fetchall()
        good = []
        for rowid, key, raw, mode, filename, value_type, size, stored, length, made_by in rows:
            why = _tampered(key, raw, mode, filename, value_type, size, stored)
            if why:
                self._problem(f"cache.db row {rowid}: {why}; counted as a miss and removed")
                self._drop_row(rowid, filename)
                continue
            good.append((key, length, stored, made_by))
        return good

    def entries(self, input_hash: str | None = None) -> list[CacheEntry]:
        """Every stored entry (or those of one input), newest first; tampered rows are removed (counted as corrupt)."""
        out: list[CacheEntry] = []
        for key_text, length, stored, made_by in self._rows():
            parsed = CacheKey.parse(key_text)
            if parsed is None:
                continue  # another schema version: it simply misses
            if input_hash is not None and parsed.input_hash != input_hash:
                continue
            out.append(CacheEntry(key_text, parsed.input_hash, parsed.stage, int(length or 0), float(stored),
                                  made_by if isinstance(made_by, str) else None))
        out.sort(key=lambda e: e.stored_at, reverse=True)
        return out

    def delete(self, key: CacheKey) -> bool:
        """Delete one entry; True when it existed."""
        return bool(self._cache.delete(str(key), retry=True))

    def delete_input(self, input_hash: str) -> int:
        """Delete every entry of one input; returns how many were removed."""
        return int(self._cache.evict(input_hash, retry=True))

    def clear(self) -> int:
        """Delete every entry; returns how many were removed."""
        return int(self._cache.clear(retry=True))

    def move_to(self, target: CacheBackend) -> int:
        """Move every entry into `target` (who made it is kept), removing each here once stored there;
        returns how many were moved. A CacheUnavailable from the target stops the move (the rest stay here)."""
        moved = 0
        for entry in self.entries():
            key = CacheKey.parse(entry.key)
            got = self._get(key) if key is not None else None
            if key is None or got is None:
                continue
            target._put(key, got[0], got[1], entry.made_by)  # noqa: SLF001 - same package
            self._cache.delete(entry.key, retry=True)
            moved += 1
        return moved

    def stats(self) -> CacheStats:
        """Counts of entries, inputs, bytes used, hits, misses and unreadable entries."""
        entries = self.entries()
        try:
            hits, misses = (int(v) for v in self._cache.stats(enable=True))
        except (TypeError, ValueError):
            self._problem("cache.db: the hit and miss counters held invalid values; they were reset")
            self._cache.stats(enable=True, reset=True)
            hits, misses = 0, 0
        return CacheStats(
            directory=str(self.directory),
            entries=len(entries),
            inputs=len({e.input_hash for e in entries}),
            volume_bytes=self._volume(),
            size_limit_bytes=int(self._cache.size_limit),
            hits=hits,
            misses=misses,
            corrupt=self._corrupt,
            problems=self.problems[-20:],
        )


_META_TABLE = "VLScopeEntry"
"""Side table of cache.db: who made each entry (rows go with their entry, by a trigger)."""


def _tampered(key: Any, raw: Any, mode: Any, filename: Any, value_type: str, size: Any, stored: Any) -> str:
    """Why a Cache row was not written by this cache ('' when it is sound). Nothing of it is unpickled."""
    if type(key) is not str:
        return f"its key is {type(key).__name__}, not text"
    if raw != 1:
        return "its key is stored pickled"
    if type(size) is not int or type(stored) not in (int, float):
        return "its size or time is not a number"
    if mode == MODE_RAW:
        return "" if filename is None and value_type == "blob" else "its value is not bytes"
    if mode == MODE_BINARY:
        ok = isinstance(filename, str) and _VALUE_FILE.match(filename) and value_type == "null"
        return "" if ok else f"it names the value file {_describe(filename)}, not one the cache makes"
    return f"it is stored with mode {_describe(mode)} (pickle or text), which is never read"
