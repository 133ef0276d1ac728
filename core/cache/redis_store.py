"""The result store on a Redis server, shared by every dashboard, CLI and API process of a team.

Same public methods, same keys (`str(CacheKey)`, e.g. ``v1/<sha256>/video.scenes/<digest>``) and
the same checksummed envelope as the disk cache (both from `core.cache.base`; this module never imports
the disk backend `core.cache.store`): values are JSON or bytes, never pickle, and an entry that fails to
read back counts as a miss, is reported and removed.

Layout on the server (database of `redis_url`):

- ``v1/<input>/<stage>/<digest>``: one value (the envelope bytes), optionally with a TTL;
- ``vlscope:index:<input>``: a sorted set per input hash (member: value key, score: time stored),
  used by `entries` and `delete_input`;
- ``vlscope:inputs``: the set of input hashes that have an index;
- ``vlscope:made_by:<input>``: a hash per input hash (field: value key, value: the user who stored it);
- ``vlscope:lock:<input>:<stage>``: while a process computes that stage (`lock`): a random token set with
  NX and a lease (PX) that the holder renews; only the holder (same token) extends or deletes it;
- ``vlscope:stats``: a hash of the hit/miss/corrupt counters (every process adds to the same ones);
- ``vlscope:problems``: the last problems met by any process (a capped list).

The size bound is the server's own: run it with ``maxmemory 4gb`` and ``maxmemory-policy
allkeys-lru`` (redis.conf, or ``redis-server --maxmemory 4gb --maxmemory-policy allkeys-lru``) and
Redis evicts the least recently used entries under pressure. `stats()` reports the server's
``maxmemory`` as the size limit and says when no bound or another policy is set. An evicted value
simply misses; its index member is pruned the next time the input's entries are listed.

Redis down: opening the cache raises CacheUnavailable (a SettingsError: the CLI and the dashboard
print it as one line naming the URL and the fix). A read that fails later counts as a miss and a
write that fails is skipped; both are reported in `problems`, so the app keeps running. With
`raise_when_down` set (the batch sets it, to keep its results elsewhere) a lost connection raises
CacheUnavailable instead.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from core.cache.base import (
    CacheBackend,
    _KIND_JSON,
    SCHEMA_VERSION,
    CacheEntry,
    CacheKey,
    CacheStats,
    CorruptEntry,
    _envelope,
    _open_envelope,
)
from core.settings import SettingsError

log = logging.getLogger(__name__)

NAMESPACE = "vlscope:"
INPUTS_KEY = NAMESPACE + "inputs"
STATS_KEY = NAMESPACE + "stats"
PROBLEMS_KEY = NAMESPACE + "problems"
PROBLEMS_KEPT = 100
DEFAULT_URL = "redis://localhost:6379/0"
LOCK_LEASE_MS = 30_000
"""How long a lock outlives a holder that stopped renewing it (a crashed process)."""

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class CacheUnavailable(SettingsError):
    """The Redis server of the result cache cannot be reached (or refused); the message names the URL and the fix."""


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print and log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def _fix_hint(url: str) -> str:
    return (f"start the server (`redis-server`, or `sudo systemctl start redis-server`), check "
            f"VLSCOPE_REDIS_URL (now {redact_url(url)}), or set VLSCOPE_CACHE_BACKEND=disk to use the disk cache")


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _index_key(input_hash: str) -> str:
    return f"{NAMESPACE}index:{input_hash}"


def _made_by_key(input_hash: str) -> str:
    return f"{NAMESPACE}made_by:{input_hash}"


@dataclass
class RedisCacheStats(CacheStats):
    """CacheStats of the Redis backend: `directory` is the (redacted) URL, `size_limit_bytes` the server's
    maxmemory (0: unbounded), `volume_bytes` the server's used memory; plus the eviction policy and warnings."""

    backend: str = "redis"
    values_bytes: int = 0
    maxmemory_policy: str = ""
    warnings: list[str] = field(default_factory=list)


class RedisResultCache(CacheBackend):
    """Result store on a Redis server; the same interface as `ResultCache`, shared by every process.

    `ttl_seconds` (optional) makes every entry expire that long after it was stored.
    """

    def __init__(self, url: str = DEFAULT_URL, ttl_seconds: int | None = None, connect_timeout: float = 3.0,
                 socket_timeout: float = 10.0) -> None:
        try:
            import redis
        except ImportError as exc:  # the optional dependency is missing
            raise CacheUnavailable("the Redis result cache needs the `redis` Python package: `pip install redis`, "
                                   "or set VLSCOPE_CACHE_BACKEND=disk to use the disk cache") from exc
        self._redis = redis
        self.url = url
        self.directory = redact_url(url)  # what stats and messages show in place of a folder
        self.ttl_seconds = int(ttl_seconds) if ttl_seconds else None
        self.raise_when_down = False
        """When True, a lost connection raises CacheUnavailable instead of counting as a miss or a skipped write."""
        self._lock = threading.Lock()
        self._local_problems: list[str] = []
        try:
            self._client = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout,
                                                socket_timeout=socket_timeout, decode_responses=False)
        except (ValueError, redis.RedisError) as exc:
            raise CacheUnavailable(f"the Redis URL {redact_url(url)} is not usable ({exc}); write it as "
                                   f"redis://HOST:PORT/DB, or set VLSCOPE_CACHE_BACKEND=disk") from exc
        try:
            self._client.ping()
        except redis.RedisError as exc:
            self._client.close()
            raise CacheUnavailable(f"cannot reach the Redis result cache at {redact_url(url)} ({_reason(exc)}); "
                                   + _fix_hint(url)) from exc

    # -- housekeeping -------------------------------------------------------------------
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "RedisResultCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _problem(self, text: str, shared: bool = True) -> None:
        """Record a problem locally and, when the server answers, in the shared list."""
        with self._lock:
            self._local_problems.append(text)
            del self._local_problems[:-PROBLEMS_KEPT]
        if shared:
            try:
                pipe = self._client.pipeline(transaction=False)
                pipe.rpush(PROBLEMS_KEY, text.encode("utf-8"))
                pipe.ltrim(PROBLEMS_KEY, -PROBLEMS_KEPT, -1)
                pipe.execute()
            except self._redis.RedisError:
                pass

    def _down(self, exc: BaseException, doing: str) -> None:
        """With `raise_when_down`, a lost connection (not a server-side refusal) raises CacheUnavailable."""
        if self.raise_when_down and isinstance(exc, (self._redis.ConnectionError, self._redis.TimeoutError)):
            raise CacheUnavailable(f"the Redis server at {self.directory} stopped answering ({_reason(exc)}) while "
                                   f"{doing}; restart it and run again") from exc

    def reachable(self) -> bool:
        """True when the server answers a PING now."""
        try:
            return bool(self._client.ping())
        except self._redis.RedisError:
            return False

    def _count(self, name: str) -> None:
        try:
            self._client.hincrby(STATS_KEY, name, 1)
        except self._redis.RedisError:
            pass

    @property
    def problems(self) -> list[str]:
        """Problems met by any process sharing this server (unreadable entries, failed reads and writes),
        oldest first; problems of this process while the server was unreachable are included."""
        try:
            shared = [p.decode("utf-8", "replace") for p in self._client.lrange(PROBLEMS_KEY, 0, -1)]
        except self._redis.RedisError:
            shared = []
        with self._lock:
            local = [p for p in self._local_problems if p not in shared]
        return shared + local

    # -- raw get/put --------------------------------------------------------------------
    def _get(self, key: CacheKey) -> tuple[bytes, bytes] | None:
        text = str(key)
        try:
            blob = self._client.get(text)
        except self._redis.ResponseError as exc:  # e.g. WRONGTYPE: something else was planted under the key
            self._corrupt(key, f"entry {text} is not a VLScope value ({exc})")
            return None
        except self._redis.RedisError as exc:
            self._down(exc, "reading a result")
            self._problem(f"read of {text} failed, counted as a miss: Redis at {self.directory} ({_reason(exc)})",
                          shared=False)
            log.warning("Redis result cache unreachable at %s: %s; counted as a miss", self.directory, _reason(exc))
            return None
        if blob is None:
            self._count("misses")
            return None
        try:
            kind, payload = _open_envelope(bytes(blob))
            if kind == _KIND_JSON:
                json.loads(str(payload, "utf-8"))
        except (CorruptEntry, UnicodeDecodeError, ValueError) as exc:
            self._corrupt(key, str(exc))
            return None
        self._count("hits")
        return kind, payload

    def _corrupt(self, key: CacheKey, reason: str) -> None:
        """An unreadable entry: a miss, counted as corrupt, reported and removed."""
        text = str(key)
        log.warning("cache entry %s was unreadable and was removed: %s", text, reason)
        self._problem(reason)
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.hincrby(STATS_KEY, "misses", 1)
            pipe.hincrby(STATS_KEY, "corrupt", 1)
            pipe.delete(text)
            pipe.zrem(_index_key(key.input_hash), text)
            pipe.hdel(_made_by_key(key.input_hash), text)
            pipe.execute()
        except self._redis.RedisError:
            pass

    def _put(self, key: CacheKey, kind: bytes, payload: bytes, made_by: str | None) -> None:
        text = str(key)
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.set(text, _envelope(kind, payload), ex=self.ttl_seconds)
            pipe.zadd(_index_key(key.input_hash), {text: time.time()})
            pipe.sadd(INPUTS_KEY, key.input_hash)
            if made_by:
                pipe.hset(_made_by_key(key.input_hash), text, made_by.encode("utf-8"))
            else:
                pipe.hdel(_made_by_key(key.input_hash), text)
            pipe.execute()
        except self._redis.RedisError as exc:
            self._down(exc, "storing a result")
            reason = _reason(exc)
            hint = (" (the server is full and does not evict: set maxmemory-policy allkeys-lru)"
                    if "OOM" in reason or "maxmemory" in reason else "")
            self._problem(f"write of {text} failed, the result is not cached: {reason}{hint}",
                          shared=not isinstance(exc, self._redis.ConnectionError))
            log.warning("Redis result cache at %s: write failed: %s%s", self.directory, reason, hint)

    # -- public API ---------------------------------------------------------------------
    def contains(self, key: CacheKey) -> bool:
        """True when an entry exists for `key` (does not count as a hit or a miss); False when Redis is down."""
        try:
            return bool(self._client.exists(str(key)))
        except self._redis.RedisError as exc:
            self._down(exc, "looking up a result")
            self._problem(f"lookup of {key} failed: {_reason(exc)}", shared=False)
            return False

    def _input_entries(self, input_hash: str) -> list[CacheEntry]:
        index = _index_key(input_hash)
        members = self._client.zrange(index, 0, -1, withscores=True)
        if not members:
            self._client.srem(INPUTS_KEY, input_hash)
            return []
        pipe = self._client.pipeline(transaction=False)
        for member, _score in members:
            pipe.strlen(member)
        pipe.hmget(_made_by_key(input_hash), [m for m, _ in members])
        # a key of the wrong type (planted) answers an error for its own command only, never for the listing
        *sizes, users = pipe.execute(raise_on_error=False)
        if not isinstance(users, list):
            users = [None] * len(members)
        out: list[CacheEntry] = []
        gone: list[bytes] = []
        for (member, score), size, user in zip(members, sizes, users):
            if isinstance(size, Exception):
                continue  # not a VLScope value: reading it counts it as corrupt and removes it
            if not size:  # evicted by the server's policy, expired, or removed: prune the index
                gone.append(member)
                continue
            key_text = member.decode("utf-8")
            parsed = CacheKey.parse(key_text)
            if parsed is None:
                continue
            made_by = user.decode("utf-8", "replace") if isinstance(user, bytes) else None
            out.append(CacheEntry(key_text, parsed.input_hash, parsed.stage, int(size), float(score), made_by))
        if gone:
            self._client.zrem(index, *gone)
            self._client.hdel(_made_by_key(input_hash), *gone)
            if len(gone) == len(members):
                self._client.srem(INPUTS_KEY, input_hash)
        return out

    def entries(self, input_hash: str | None = None) -> list[CacheEntry]:
        """Every stored entry (or those of one input), newest first; [] (with a problem) when Redis is down."""
        try:
            if input_hash is not None:
                out = self._input_entries(input_hash)
            else:
                out = []
                for member in self._client.smembers(INPUTS_KEY):
                    out += self._input_entries(member.decode("utf-8"))
        except self._redis.RedisError as exc:
            self._down(exc, "listing results")
            self._problem(f"listing entries failed: Redis at {self.directory} ({_reason(exc)})", shared=False)
            return []
        out.sort(key=lambda e: e.stored_at, reverse=True)
        return out

    def _value_keys_matching(self, pattern: str) -> list[bytes]:
        return list(self._client.scan_iter(match=pattern, count=1000))

    def delete(self, key: CacheKey) -> bool:
        """Delete one entry; True when it existed (False, with a problem, when Redis is down)."""
        text = str(key)
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(text)
            pipe.zrem(_index_key(key.input_hash), text)
            return bool(pipe.execute()[0])
        except self._redis.RedisError as exc:
            self._problem(f"delete of {text} failed: {_reason(exc)}", shared=False)
            return False

    def delete_input(self, input_hash: str) -> int:
        """Delete every entry of one input; returns how many were removed. CacheUnavailable when Redis is down."""
        try:
            index = _index_key(input_hash)
            keys = {m for m in self._client.zrange(index, 0, -1)}
            # entries whose index was evicted are found by their key pattern
            keys |= set(self._value_keys_matching(f"v{SCHEMA_VERSION}/{_glob_escape(input_hash)}/*"))
            removed = int(self._client.delete(*keys)) if keys else 0
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(index, _made_by_key(input_hash))
            pipe.srem(INPUTS_KEY, input_hash)
            pipe.execute()
            return removed
        except self._redis.RedisError as exc:
            raise CacheUnavailable(f"could not delete the entries of {input_hash} from the Redis result cache at "
                                   f"{self.directory} ({_reason(exc)}); " + _fix_hint(self.url)) from exc

    def clear(self) -> int:
        """Delete every VLScope entry (other keys on the server are left alone); returns how many were removed."""
        try:
            removed = 0
            batch: list[bytes] = []
            for k in self._client.scan_iter(match=f"v{SCHEMA_VERSION}/*", count=1000):
                batch.append(k)
                if len(batch) >= 1000:
                    removed += int(self._client.delete(*batch))
                    batch = []
            if batch:
                removed += int(self._client.delete(*batch))
            aux = (list(self._client.scan_iter(match=f"{NAMESPACE}index:*", count=1000))
                   + list(self._client.scan_iter(match=f"{NAMESPACE}made_by:*", count=1000)) + [INPUTS_KEY.encode()])
            self._client.delete(*aux)
            return removed
        except self._redis.RedisError as exc:
            raise CacheUnavailable(f"could not clear the Redis result cache at {self.directory} ({_reason(exc)}); "
                                   + _fix_hint(self.url)) from exc

    @contextmanager
    def lock(self, input_hash: str, stage: str, on_wait: Callable[[], None] | None = None,
             lease_ms: int = LOCK_LEASE_MS, poll_s: float = 0.2) -> Iterator[None]:
        """Hold the lock of (input, stage) shared by every process using this server: SET NX PX with a random
        token, renewed by a thread while held and deleted (only if still ours) at the end. A holder that dies
        loses it after `lease_ms`. With the server unreachable the work goes on unlocked (CacheUnavailable with
        `raise_when_down`)."""
        name = f"{NAMESPACE}lock:{input_hash}:{stage}"
        token = secrets.token_hex(16).encode("ascii")
        held = False
        waited = False
        while not held:
            try:
                held = bool(self._client.set(name, token, nx=True, px=lease_ms))
            except self._redis.RedisError as exc:
                self._down(exc, f"taking the lock of {stage}")
                log.warning("Redis at %s: lock %s not taken (%s); going on without it", self.directory, name,
                            _reason(exc))
                break
            if not held:
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                time.sleep(poll_s)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(lease_ms / 3000):
                try:
                    self._client.eval(_RENEW, 1, name, token, lease_ms)
                except self._redis.RedisError:
                    pass

        renewer = threading.Thread(target=renew, name=f"lock:{stage}", daemon=True)
        if held:
            renewer.start()
        try:
            yield
        finally:
            stop.set()
            if held:
                renewer.join()
                try:
                    self._client.eval(_RELEASE, 1, name, token)
                except self._redis.RedisError:
                    pass  # the lease runs out by itself

    def server_memory(self) -> dict[str, Any]:
        """The server's `maxmemory` (bytes, 0: unbounded), `maxmemory_policy` and `used_memory` (bytes)."""
        info = self._client.info("memory")
        return {"maxmemory": int(info.get("maxmemory", 0) or 0),
                "maxmemory_policy": str(info.get("maxmemory_policy", "") or ""),
                "used_memory": int(info.get("used_memory", 0) or 0)}

    def stats(self) -> RedisCacheStats:
        """Counts of entries and inputs, the server's memory use and bound, and the team-wide hit, miss and
        corrupt counters. Never raises: with Redis down the counts are 0 and `problems` says why."""
        warnings: list[str] = []
        try:
            counters = {k.decode(): int(v) for k, v in self._client.hgetall(STATS_KEY).items()}
            memory = self.server_memory()
        except self._redis.RedisError as exc:
            self._problem(f"statistics unavailable: Redis at {self.directory} ({_reason(exc)}); "
                          + _fix_hint(self.url), shared=False)
            return RedisCacheStats(directory=self.directory, entries=0, inputs=0, volume_bytes=0, size_limit_bytes=0,
                                   hits=0, misses=0, corrupt=0, problems=self.problems[-20:],
                                   warnings=["the Redis server is unreachable"])
        entries = self.entries()
        if memory["maxmemory"] == 0:
            warnings.append("the Redis server has no memory bound: set `maxmemory` (e.g. 4gb) and "
                            "`maxmemory-policy allkeys-lru` so old results are evicted instead of filling memory")
        elif memory["maxmemory_policy"] != "allkeys-lru":
            warnings.append(f"the Redis server's maxmemory-policy is {memory['maxmemory_policy']}: set allkeys-lru "
                            "so the least recently used results are evicted when it is full")
        return RedisCacheStats(
            directory=self.directory,
            entries=len(entries),
            inputs=len({e.input_hash for e in entries}),
            volume_bytes=memory["used_memory"],
            size_limit_bytes=memory["maxmemory"],
            hits=counters.get("hits", 0),
            misses=counters.get("misses", 0),
            corrupt=counters.get("corrupt", 0),
            problems=self.problems[-20:],
            values_bytes=sum(e.size_bytes for e in entries),
            maxmemory_policy=memory["maxmemory_policy"],
            warnings=warnings,
        )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
