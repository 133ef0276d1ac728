"""The result cache: content hash + stage + parameters + model => JSON or bytes, on disk."""

from core.cache.store import (
    SCHEMA_VERSION,
    CacheBackend,
    CacheDamaged,
    CacheEntry,
    CacheKey,
    CacheStats,
    CorruptEntry,
    ResultCache,
    canonical_json,
    hash_bytes,
    hash_file,
    make_key,
    open_cache,
)

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
