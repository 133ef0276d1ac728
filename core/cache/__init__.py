"""The result cache: content hash + stage + parameters + model => JSON or bytes, on disk or on Redis.

Layout: `base` (keys, envelope, the `CacheBackend` interface, hashing), `store` (the disk backend,
`ResultCache`), `redis_store` (the Redis backend, `RedisResultCache`); the backends never import each
other. `open_cache(settings)` picks one.
"""

from __future__ import annotations

from typing import Any

from core.cache.base import (
    SCHEMA_VERSION,
    CacheBackend,
    CacheEntry,
    CacheKey,
    CacheStats,
    CorruptEntry,
    canonical_json,
    hash_bytes,
    hash_file,
    make_key,
)
from core.cache.store import CacheDamaged, ResultCache


def open_cache(settings: Any) -> CacheBackend:
    """The result cache described by `settings`: the disk cache (cache_dir, cache_size_limit_gb), or with
    `cache_backend` "redis" a RedisResultCache at `redis_url` (same methods; CacheUnavailable, a
    SettingsError naming the URL and the fix, when the server cannot be reached)."""
    if getattr(settings, "cache_backend", "disk") == "redis":
        from core.cache.redis_store import RedisResultCache

        return RedisResultCache(settings.redis_url)
    return ResultCache(settings.cache_dir, int(settings.cache_size_limit_gb * 1024**3))


__all__ = [
    "SCHEMA_VERSION",
    "CacheBackend",
    "CacheDamaged",
    "CacheEntry",
    "CacheKey",
    "CacheStats",
    "CorruptEntry",
    "ResultCache",
    "canonical_json",
    "hash_bytes",
    "hash_file",
    "make_key",
    "open_cache",
]
