"""The Redis result cache against a real `redis-server` started here on a free loopback port:
round trips, keys, one input's entries, corruption, no pickle, two processes sharing, eviction, Redis down."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Iterator

import pytest

from core.cache import make_key, open_cache
from core.settings import Settings

from tests.cache.redis_server import REDIS_SERVER, RedisServer, free_port
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (Debian: apt-get install redis-server)"
)
redis = pytest.importorskip("redis", reason="the redis Python package is not installed (pip install redis)")

from core.cache.redis_store import CacheUnavailable, RedisResultCache  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.stop()


@pytest.fixture
def raw(server: RedisServer) -> Iterator["redis.Redis"]:
    client = server.client()
    client.flushdb()
    client.config_set("maxmemory", 0)
    client.config_set("maxmemory-policy", "noeviction")
    yield client
    client.close()


@pytest.fixture
def cache(server: RedisServer, raw: "redis.Redis") -> Iterator[RedisResultCache]:
    c = RedisResultCache(server.url)
    yield c
    c.close()


def test_json_and_bytes_round_trip(cache: RedisResultCache) -> None:
    key = make_key("a" * 64, "scenes", {"threshold": 27.0}, model="m", precision="bf16")
    assert cache.get_json(key) is None
    value = {"shots": [[0.0, 6.2], [7.2, 12.1]], "label": "第3分15秒", "n": 2}
    cache.put_json(key, value)
    assert cache.get_json(key) == value
    assert cache.contains(key)
    bkey = make_key("a" * 64, "thumbnail", {"t": 1.5})
    cache.put_bytes(bkey, b"\x89PNG raw bytes")
    assert cache.get_bytes(bkey) == b"\x89PNG raw bytes"
    stats = cache.stats()
    assert (stats.entries, stats.inputs) == (2, 1)
    assert stats.hits == 2 and stats.misses == 1
    assert stats.directory == cache.url
    with pytest.raises(TypeError):
        cache.put_bytes(bkey, "text")  # type: ignore[arg-type]


def test_same_keys_as_the_disk_cache(cache: RedisResultCache, raw: "redis.Redis") -> None:
    key = make_key("h" * 64, "ocr-page", {"a": 1, "page": 0}, model="rapidocr-3")
    cache.put_json(key, {"lines": []})
    assert raw.exists(str(key))
    assert str(key).startswith("v1/" + "h" * 64 + "/ocr-page/")
    other = make_key("h" * 64, "ocr-page", {"a": 1, "page": 1}, model="rapidocr-3")
    assert cache.get_json(other) is None


def test_list_and_delete_one_inputs_entries(cache: RedisResultCache) -> None:
    for stage in ("probe", "scenes", "motion"):
        cache.put_json(make_key("x" * 64, stage), {"stage": stage})
    cache.put_json(make_key("y" * 64, "probe"), {"stage": "probe"})
    listed = cache.entries("x" * 64)
    assert sorted(e.stage for e in listed) == ["motion", "probe", "scenes"]
    assert all(e.size_bytes > 0 and e.stored_at > 0 for e in listed)
    assert [e.stage for e in listed][0] == "motion"  # newest first
    assert len(cache.entries()) == 4
    assert cache.delete_input("x" * 64) == 3
    assert cache.entries("x" * 64) == []
    assert cache.get_json(make_key("y" * 64, "probe")) == {"stage": "probe"}
    assert cache.clear() == 1
    assert cache.stats().entries == 0


def test_clear_leaves_other_applications_keys(cache: RedisResultCache, raw: "redis.Redis") -> None:
    raw.set("someone-else:session", b"keep me")
    cache.put_json(make_key("z" * 64, "probe"), {"d": 1})
    assert cache.clear() == 1
    assert raw.get("someone-else:session") == b"keep me"


def test_truncated_value_is_a_reported_miss_and_removed(cache: RedisResultCache, raw: "redis.Redis") -> None:
    key = make_key("c" * 64, "big")
    cache.put_json(key, {"text": "x" * 100_000})
    raw.set(str(key), raw.get(str(key))[:5000])  # cut short
    assert cache.get_json(key) is None
    stats = cache.stats()
    assert stats.corrupt == 1 and stats.misses >= 1
    assert any("checksum" in p for p in stats.problems)
    assert not cache.contains(key)  # removed, so it is recomputed next time
    assert cache.entries("c" * 64) == []
    cache.put_json(key, {"text": "fresh"})
    assert cache.get_json(key) == {"text": "fresh"}


def test_wrong_type_under_a_key_is_a_reported_miss(cache: RedisResultCache, raw: "redis.Redis") -> None:
    key = make_key("w" * 64, "probe")
    raw.rpush(str(key), b"a list, not a value")
    assert cache.get_json(key) is None
    assert cache.stats().corrupt == 1
    assert not raw.exists(str(key))


def test_planted_pickle_is_refused_not_executed(cache: RedisResultCache, raw: "redis.Redis", tmp_path: Path) -> None:
    key = make_key("d" * 64, "evil")
    cache.put_json(key, {"ok": True})
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    raw.set(str(key), pickle.dumps(Exploit()))
    assert cache.get_json(key) is None
    assert cache.get_bytes(key) is None
    assert not marker.exists()
    assert cache.stats().corrupt == 1
    assert any("envelope" in p for p in cache.problems)


def test_no_pickle_stored(cache: RedisResultCache, raw: "redis.Redis") -> None:
    cache.put_json(make_key("e" * 64, "small"), {"a": [1, 2, 3]})
    cache.put_json(make_key("e" * 64, "large"), {"t": "y" * 200_000})
    cache.put_bytes(make_key("e" * 64, "blob"), os.urandom(100_000))
    cache.get_json(make_key("e" * 64, "missing"))
    values = [k for k in raw.scan_iter("v1/*")]
    assert len(values) == 3
    for k in values:
        blob = raw.get(k)
        assert blob[:4] == b"VLS1" and blob[4:5] in (b"J", b"B")  # the checksummed envelope
        assert blob[:1] != b"\x80"  # pickle protocol header
    for k in raw.scan_iter("vlscope:*"):
        assert raw.type(k) in (b"zset", b"set", b"hash", b"list")
    assert {int(v) for v in raw.hgetall("vlscope:stats").values()} <= set(range(100))  # plain integers


def test_two_processes_share_entries_and_counters(server: RedisServer, raw: "redis.Redis") -> None:
    first, second = RedisResultCache(server.url), RedisResultCache(server.url)
    try:
        key = make_key("s" * 64, "video.scenes", {"threshold": 27})
        assert second.get_json(key) is None  # miss, counted
        first.put_json(key, {"cuts": [3.2, 7.9]})
        assert second.get_json(key) == {"cuts": [3.2, 7.9]}
        assert second.get_json(key) == {"cuts": [3.2, 7.9]}
        assert first.contains(key)
        seen_by_first = first.stats()
        assert (seen_by_first.hits, seen_by_first.misses) == (2, 1)
        assert [e.stage for e in first.entries("s" * 64)] == ["video.scenes"]
        raw.set(str(key), b"garbage")
        assert first.get_json(key) is None
        assert second.stats().corrupt == 1  # counted once, seen by both
        assert any("envelope" in p for p in second.problems)
        assert second.delete_input("s" * 64) == 0  # already removed by the first
    finally:
        first.close()
        second.close()


def test_maxmemory_allkeys_lru_evicts_without_errors(cache: RedisResultCache, raw: "redis.Redis") -> None:
    used = int(raw.info("memory")["used_memory"])
    limit = used + 3 * 1024 * 1024
    raw.config_set("maxmemory", limit)
    raw.config_set("maxmemory-policy", "allkeys-lru")
    blob = os.urandom(200 * 1024)
    keys = [make_key(f"{i:064d}", "frame") for i in range(40)]  # 8 MB into a 3 MB budget
    for key in keys:
        cache.put_bytes(key, blob)
    assert cache.get_bytes(keys[-1]) == blob  # newest kept
    kept = sum(raw.exists(str(k)) for k in keys)
    assert kept < 40
    assert not [p for p in cache.problems if "write" in p]  # no failed write
    stats = cache.stats()
    assert stats.size_limit_bytes == limit
    assert stats.maxmemory_policy == "allkeys-lru"
    assert stats.entries <= kept and not stats.warnings
    assert stats.volume_bytes <= limit * 1.1


def test_unbounded_server_is_reported_and_full_server_skips_writes(cache: RedisResultCache,
                                                                    raw: "redis.Redis") -> None:
    assert any("maxmemory" in w for w in cache.stats().warnings)
    raw.config_set("maxmemory", int(raw.info("memory")["used_memory"]) + 256 * 1024)
    raw.config_set("maxmemory-policy", "noeviction")
    for i in range(10):
        cache.put_bytes(make_key(f"{i:064d}", "frame"), os.urandom(100 * 1024))  # never raises
    assert any("allkeys-lru" in p for p in cache.problems)


def test_redis_down_at_startup_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(CacheUnavailable) as err:
        open_cache(Settings(cache_backend="redis", redis_url=url))
    message = str(err.value)
    assert url in message and "redis-server" in message and "VLSCOPE_CACHE_BACKEND=disk" in message


def test_cli_reports_redis_down_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from core.cli import main

    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("VLSCOPE_CACHE_BACKEND", "redis")
    monkeypatch.setenv("VLSCOPE_REDIS_URL", url)
    assert main(["cache", "stats"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the Redis result cache") and "Traceback" not in err
    assert "s3cret" not in err and "VLSCOPE_CACHE_BACKEND=disk" in err
    assert len(err.strip().splitlines()) == 1


def test_redis_going_down_mid_run_reads_as_misses(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path)
    try:
        with open_cache(Settings(cache_backend="redis", redis_url=srv.url)) as c:
            assert isinstance(c, RedisResultCache)
            key = make_key("m" * 64, "probe")
            c.put_json(key, {"duration": 3.0})
            assert c.get_json(key) == {"duration": 3.0}
            srv.stop()
            assert c.get_json(key) is None  # a miss, not a crash
            c.put_json(key, {"duration": 3.0})  # skipped, not a crash
            assert c.contains(key) is False
            assert c.entries() == []
            stats = c.stats()
            assert stats.entries == 0 and stats.warnings == ["the Redis server is unreachable"]
            assert any("read of" in p for p in c.problems) and any("write of" in p for p in c.problems)
            with pytest.raises(CacheUnavailable, match="VLSCOPE_CACHE_BACKEND=disk"):
                c.clear()
    finally:
        srv.stop()


def test_disk_stays_the_default(tmp_path: Path) -> None:
    from core.cache import ResultCache

    with open_cache(Settings(cache_dir=tmp_path / "c")) as c:
        assert isinstance(c, ResultCache)
