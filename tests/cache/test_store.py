"""The disk result cache: round trips, keys, eviction, corruption, and no pickle anywhere."""

from __future__ import annotations

import os
import pickle
import sqlite3
import stat
from pathlib import Path

import pytest

from core.cache import ResultCache, hash_bytes, hash_file, make_key


@pytest.fixture
def cache(tmp_path: Path) -> ResultCache:
    c = ResultCache(tmp_path / "cache", size_limit_bytes=50 * 1024**2)
    yield c
    c.close()


def test_json_and_bytes_round_trip(cache: ResultCache) -> None:
    key = make_key("a" * 64, "scenes", {"threshold": 27.0}, model="m", precision="bf16")
    assert cache.get_json(key) is None
    value = {"shots": [[0.0, 6.2], [7.2, 12.1]], "label": "第3分15秒", "n": 2}
    cache.put_json(key, value)
    assert cache.get_json(key) == value
    bkey = make_key("a" * 64, "thumbnail", {"t": 1.5})
    cache.put_bytes(bkey, b"\x89PNG raw bytes")
    assert cache.get_bytes(bkey) == b"\x89PNG raw bytes"
    stats = cache.stats()
    assert (stats.entries, stats.inputs) == (2, 1)
    assert stats.hits == 2 and stats.misses == 1


def test_key_depends_on_params_model_precision_and_is_order_free() -> None:
    base = make_key("h", "ocr", {"a": 1, "b": 2}, "m", "bf16")
    assert base == make_key("h", "ocr", {"b": 2, "a": 1}, "m", "bf16")
    others = [
        make_key("h", "ocr", {"a": 1, "b": 3}, "m", "bf16"),
        make_key("h", "ocr", {"a": 1, "b": 2}, "m2", "bf16"),
        make_key("h", "ocr", {"a": 1, "b": 2}, "m", "fp16"),
        make_key("h", "scenes", {"a": 1, "b": 2}, "m", "bf16"),
        make_key("h2", "ocr", {"a": 1, "b": 2}, "m", "bf16"),
    ]
    assert len({str(k) for k in others + [base]}) == 6
    with pytest.raises(ValueError):
        make_key("", "ocr")


def test_values_survive_reopening(tmp_path: Path) -> None:
    key = make_key("b" * 64, "probe")
    with ResultCache(tmp_path / "c") as c:
        c.put_json(key, {"duration": 12.5})
    with ResultCache(tmp_path / "c") as c:
        assert c.get_json(key) == {"duration": 12.5}


def test_list_and_delete_one_inputs_entries(cache: ResultCache) -> None:
    for stage in ("probe", "scenes", "motion"):
        cache.put_json(make_key("x" * 64, stage), {"stage": stage})
    cache.put_json(make_key("y" * 64, "probe"), {"stage": "probe"})
    assert sorted(e.stage for e in cache.entries("x" * 64)) == ["motion", "probe", "scenes"]
    assert cache.delete_input("x" * 64) == 3
    assert cache.entries("x" * 64) == []
    assert cache.get_json(make_key("y" * 64, "probe")) == {"stage": "probe"}
    assert cache.clear() == 1
    assert cache.stats().entries == 0


def test_size_limit_evicts_oldest_entries(tmp_path: Path) -> None:
    with ResultCache(tmp_path / "small", size_limit_bytes=1024 * 1024) as c:
        blob = os.urandom(300 * 1024)  # stored as files: counts toward the size limit
        keys = [make_key(f"{i:064d}", "frame") for i in range(8)]
        for key in keys:
            c.put_bytes(key, blob)
        stats = c.stats()
        assert stats.volume_bytes <= 1.3 * 1024 * 1024
        assert c.get_bytes(keys[-1]) == blob  # newest kept
        assert c.get_bytes(keys[0]) is None  # oldest evicted
        assert stats.entries < 8


def _value_file(cache_dir: Path) -> Path:
    files = [p for p in cache_dir.rglob("*.val")]
    assert files, "expected the value to be stored in a file"
    return files[0]


def test_truncated_value_file_is_a_reported_miss(cache: ResultCache) -> None:
    key = make_key("c" * 64, "big")
    cache.put_json(key, {"text": "x" * 100_000})
    path = _value_file(cache.directory)
    path.write_bytes(path.read_bytes()[:5000])  # cut in half by a crash or a full disk
    assert cache.get_json(key) is None
    stats = cache.stats()
    assert stats.corrupt == 1 and stats.misses >= 1
    assert any("checksum" in p for p in stats.problems)
    assert not cache.contains(key)  # removed, so it is recomputed next time
    cache.put_json(key, {"text": "fresh"})
    assert cache.get_json(key) == {"text": "fresh"}


def test_planted_pickle_is_refused_not_executed(cache: ResultCache, tmp_path: Path) -> None:
    key = make_key("d" * 64, "evil")
    cache.put_json(key, {"ok": True})
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    db = sqlite3.connect(cache.directory / "cache.db")
    db.execute(
        "UPDATE Cache SET mode = 4, value = ?, filename = NULL WHERE key = ?",
        (sqlite3.Binary(pickle.dumps(Exploit())), str(key)),
    )
    db.commit()
    db.close()
    assert cache.get_json(key) is None
    assert not marker.exists()
    assert cache.stats().corrupt == 1


def test_no_pickle_anywhere_on_disk(cache: ResultCache) -> None:
    cache.put_json(make_key("e" * 64, "small"), {"a": [1, 2, 3]})
    cache.put_json(make_key("e" * 64, "large"), {"t": "y" * 200_000})
    cache.put_bytes(make_key("e" * 64, "blob"), os.urandom(100_000))
    db = sqlite3.connect(cache.directory / "cache.db")
    modes = {row[0] for row in db.execute("SELECT mode FROM Cache")}
    raws = {row[0] for row in db.execute("SELECT raw FROM Cache")}
    db.close()
    assert modes <= {1, 2}  # raw or binary; 4 would be pickle
    assert raws == {1}  # keys stored raw, not pickled
    for path in cache.directory.rglob("*.val"):
        head = path.read_bytes()[:2]
        assert head != b"\x80\x04" and head[:1] != b"\x80"  # pickle protocol header
    with pytest.raises(TypeError):
        cache._cache.set("v1/x/y/z", {"not": "bytes"})  # the storage layer refuses to pickle


def test_folder_is_owner_only(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o777)
    ResultCache(folder).close()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_hashes_are_content_hashes(tmp_path: Path) -> None:
    data = os.urandom(10 * 1024 * 1024 + 7)
    a = tmp_path / "a.bin"
    b = tmp_path / "renamed.mp4"
    a.write_bytes(data)
    b.write_bytes(data)
    assert hash_file(a) == hash_file(b) == hash_bytes(data)
    assert len(hash_file(a)) == 64


def test_a_large_buffer_is_stored_as_its_envelope_without_being_joined(cache: ResultCache) -> None:
    """A video part's features (a read-only buffer of ~85 MB) go to their value file from views of the buffer: the
    file holds exactly the envelope that joined bytes would have made, read back as the same bytes, checked the
    same way when damaged; a writable buffer is copied first (changing it after the put changes nothing)."""
    from core.cache.base import _KIND_BYTES, _envelope
    from core.cache.store import STREAM_MIN_BYTES

    payload = os.urandom(STREAM_MIN_BYTES + 12345)
    key = make_key("d" * 64, "features", {"part": 0})
    cache.put_bytes(key, memoryview(payload).toreadonly())
    assert _value_file(cache.directory).read_bytes() == _envelope(_KIND_BYTES, payload)
    assert cache.get_bytes(key) == payload
    mutable = bytearray(payload)
    other = make_key("d" * 64, "features", {"part": 1})
    cache.put_bytes(other, memoryview(mutable))
    mutable[:4] = b"XXXX"
    assert cache.get_bytes(other) == payload
    cache.delete(other)
    path = _value_file(cache.directory)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert cache.get_bytes(key) is None and any("checksum" in p for p in cache.stats().problems)
