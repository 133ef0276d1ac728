"""Issue 12, the result cache and `vlscope batch`: a Redis server stopping mid-batch (D5), tampered rows and
Settings in cache.db (D10), two batches over the same files (D12c), and who made each result (made_by).

Everything is real: files made here with Pillow, OCR by the real engine, a real `redis-server` on a free
loopback port, real cache folders planted with sqlite3, and real `vlscope batch` processes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from core.auth import acting_as
from core.cache import ResultCache, make_key
from core.cli import main
from tests.cache.redis_server import REDIS_SERVER, RedisServer

REPO = Path(__file__).resolve().parents[2]
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (apt-get install "
                                 "redis-server)")


# --- helpers ---------------------------------------------------------------------------------

def _page(path: Path, lines: list[str]) -> Path:
    """A white page with black printed lines (what the OCR stage reads)."""
    img = Image.new("RGB", (1200, 90 * len(lines) + 60), "white")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 40)
    except OSError:
        font = ImageFont.load_default(size=40)
    for i, line in enumerate(lines):
        draw.text((30, 30 + 90 * i), line, fill="black", font=font)
    img.save(path)
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def by_file(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["file"]: f for f in report["files"]}


# --- D5: Redis stops answering mid-batch -----------------------------------------------------

@needs_redis
def test_break5_redis_stopped_mid_batch_keeps_the_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("redis")
    import core.ocr.pipeline as op
    from core.library import list_items, load_results

    folder = tmp_path / "scans"
    folder.mkdir()
    _page(folder / "a.png", ["INVOICE 2024", "TOTAL 118"])
    _page(folder / "b.png", ["RECEIPT 77"])
    _page(folder / "c.png", ["ORDER 15"])
    cache_dir = tmp_path / "cache"
    server = RedisServer(tmp_path)
    try:
        monkeypatch.setenv("VLSCOPE_CACHE_BACKEND", "redis")
        monkeypatch.setenv("VLSCOPE_REDIS_URL", server.url)
        monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(cache_dir))
        real_ocr = op.ocr_page_image
        pages_read: list[int] = []

        def ocr_then_redis_dies(*args: Any, **kwargs: Any) -> Any:
            page = real_ocr(*args, **kwargs)
            pages_read.append(page.index)
            if len(pages_read) == 1:
                server.stop()  # the first result is computed; the server dies before it is stored
            return page

        monkeypatch.setattr(op, "ocr_page_image", ocr_then_redis_dies)
        code, out, err = run_cli("batch", str(folder), "--stages", "ocr", "--json")
        report = json.loads(out)
        files = by_file(report)
        kept_dir = cache_dir.resolve() / "kept-while-redis-was-down"

        assert code == 1
        assert "AssertionError" not in out + err and "Traceback" not in err
        assert pages_read == [0]  # only a.png was computed; the later files were not started
        assert files["a.png"]["status"] == "done" and files["a.png"]["stages"] == {"ocr": "computed"}
        for name in ("b.png", "c.png"):
            assert files[name]["status"] == "failed"
            assert files[name]["error"].startswith(f"not analysed: the Redis server at {server.url} stopped answering")
            assert "restart it and run the batch again" in files[name]["error"]
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"error: the Redis server at {server.url} stopped answering (")
        assert last.endswith(f"3 result(s) kept in {kept_dir}; restart it and run the batch again to store them")
        assert report["cache_outage"]["kept"] == 3 and report["cache_outage"]["folder"] == str(kept_dir)

        # the kept folder is a disk cache holding a.png's OCR page, Library record and thumbnail
        with ResultCache(kept_dir) as kept:
            items = {i.name: i for i in list_items(kept)}
            assert list(items) == ["a.png"] and items["a.png"].stages == ["OCR"]
            text = load_results(kept, items["a.png"].input_hash).ocr_text
            assert "INVOICE 2024" in text and "TOTAL 118" in text
            a_hash = items["a.png"].input_hash

        # restarted, the next run stores the kept results on the server first, so a.png is not recomputed
        server = RedisServer(tmp_path, port=server.port)
        code, out, err = run_cli("batch", str(folder), "--stages", "ocr", "--json")
        report = json.loads(out)
        files = by_file(report)
        assert code == 0, err
        assert f"note: stored 3 result(s) kept in {kept_dir} while the Redis server was down" in err
        assert report["kept_results_stored"] == 3 and report["cache_outage"] is None
        assert files["a.png"]["status"] == "cached"
        assert files["b.png"]["stages"] == files["c.png"]["stages"] == {"ocr": "computed"}
        assert pages_read == [0, 0, 0]  # b.png and c.png, once each
        with ResultCache(kept_dir) as kept:
            assert kept.entries() == []
        from core.cache.redis_store import RedisResultCache

        with RedisResultCache(server.url) as shared:
            assert "INVOICE 2024" in load_results(shared, a_hash).ocr_text
            assert sorted(i.name for i in list_items(shared)) == ["a.png", "b.png", "c.png"]
    finally:
        server.stop()


# --- D10: tampered rows and Settings in cache.db ----------------------------------------------

class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (str(self.marker), "w"))


def _plant_rows(db_path: Path, marker: Path, outside: Path) -> None:
    db = sqlite3.connect(db_path)
    cols = "key, raw, store_time, expire_time, access_time, tag, size, mode, filename, value"
    rows = [
        (5, 1, 0.0, None, 0.0, None, 0, 1, None, sqlite3.Binary(b"VLS1J")),  # an integer key
        (sqlite3.Binary(pickle.dumps(_Exploit(marker))), 0, 0.5, None, 0.0, None, 0, 4, None,
         sqlite3.Binary(pickle.dumps(_Exploit(marker)))),  # a pickled key and value
        (str(make_key("p" * 64, "ocr-page")), 1, 1.0, None, 0.0, "p" * 64, 0, 4, None,
         sqlite3.Binary(pickle.dumps(_Exploit(marker)))),  # a pickled value under a good key
        (str(make_key("q" * 64, "ocr-page")), 1, 1.5, None, 0.0, "q" * 64, 40_000, 2,
         os.path.relpath(outside, db_path.parent), None),  # a value file outside the folder
        (str(make_key("r" * 64, "ocr-page")), 1, "yesterday", None, 0.0, "r" * 64, "big", 1, None,
         sqlite3.Binary(b"x")),  # words where numbers belong
    ]
    db.executemany(f"INSERT INTO Cache ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()


def test_break10_planted_cache_rows_are_reported_misses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cache"
    marker = tmp_path / "pwned"
    outside = tmp_path / "precious.txt"
    outside.write_text("not the cache's to read or delete")
    good = make_key("a" * 64, "ocr-page", {"page": 0})
    with ResultCache(folder, size_limit_bytes=2 * 1024 * 1024) as c:
        c.put_json(good, {"lines": [{"text": "INVOICE 2024"}]})
    _plant_rows(folder / "cache.db", marker, outside)

    with ResultCache(folder, size_limit_bytes=2 * 1024 * 1024) as c:
        listed = c.entries()
        assert [e.key for e in listed] == [str(good)]  # only the real entry is listed
        assert c.get_json(good) == {"lines": [{"text": "INVOICE 2024"}]}
        assert c.get_json(make_key("p" * 64, "ocr-page")) is None
        stats = c.stats()
        assert stats.entries == 1 and stats.corrupt == 5
        problems = " | ".join(stats.problems)
        assert "its key is int, not text" in problems and "its key is bytes, not text" in problems
        assert "mode 4" in problems and "not one the cache makes" in problems and "not a number" in problems
        # writes go on, and the size limit evicts the oldest entries one by one (planted rows no longer crash it)
        blob = os.urandom(600 * 1024)
        for i in range(6):
            c.put_bytes(make_key(f"{i:064d}", "frame"), blob)
        assert c.get_bytes(make_key(f"{5:064d}", "frame")) == blob
        assert c.stats().volume_bytes <= 2.5 * 1024 * 1024
        left = len(c.entries())
        db = sqlite3.connect(folder / "cache.db")
        assert {row[0] for row in db.execute("SELECT typeof(key) FROM Cache")} == {"text"}
        db.close()
    assert not marker.exists()  # nothing was unpickled
    assert outside.read_text() == "not the cache's to read or delete"

    # the commands, each on a freshly planted folder
    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(folder))
    monkeypatch.delenv("VLSCOPE_CACHE_BACKEND", raising=False)
    _plant_rows(folder / "cache.db", marker, outside)
    code, out, err = run_cli("cache", "stats")
    assert code == 0 and "Traceback" not in err
    assert f"entries:  {left} (" in out and "corrupt:  5" in out
    _plant_rows(folder / "cache.db", marker, outside)
    code, out, err = run_cli("cache", "list")
    assert code == 0 and "Traceback" not in err
    assert out.strip().splitlines()[-1] == f"{left} entries"
    assert not marker.exists() and outside.exists()


def test_break10_tampered_settings_table_is_reset_at_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cache"
    marker = tmp_path / "pwned"
    key = make_key("b" * 64, "video.scenes")
    with ResultCache(folder) as c:
        c.put_json(key, {"cuts": [1.5, 7.2]})
    db = sqlite3.connect(folder / "cache.db")
    db.execute("UPDATE Settings SET value = ? WHERE key = 'eviction_policy'",
               (sqlite3.Binary(pickle.dumps(_Exploit(marker))),))
    db.execute("UPDATE Settings SET value = 'evil' WHERE key = 'size_limit'")
    db.execute("UPDATE Settings SET value = ? WHERE key = 'count'", (sqlite3.Binary(pickle.dumps(_Exploit(marker))),))
    db.execute("UPDATE Settings SET value = 'wal; junk' WHERE key = 'sqlite_journal_mode'")
    db.execute("INSERT INTO Settings VALUES ('disk_evil', 1)")  # passed to the storage layer
    db.execute("INSERT INTO Settings VALUES ('sqlite_mmap_size; ATTACH', '1 junk')")  # run as a PRAGMA
    db.execute("INSERT INTO Settings VALUES ('close', 1)")  # set as an attribute of the cache
    db.commit()
    db.close()

    with ResultCache(folder) as c:
        problems = " | ".join(c.problems)
        assert "setting eviction_policy held an invalid value (a pickle of" in problems
        assert "setting size_limit held an invalid value ('evil')" in problems
        assert "setting count held an invalid value" in problems
        assert "setting sqlite_journal_mode held an invalid value" in problems
        assert "unknown setting 'disk_evil'" in problems and "unknown setting 'close'" in problems
        assert c.get_json(key) == {"cuts": [1.5, 7.2]}
        c.put_json(make_key("b" * 64, "video.motion"), {"peaks": []})
        stats = c.stats()
        assert stats.entries == 2 and stats.corrupt == 7
        assert stats.size_limit_bytes == 20 * 1024**3
    db = sqlite3.connect(folder / "cache.db")
    settings = dict(db.execute("SELECT key, value FROM Settings"))
    db.close()
    assert settings["eviction_policy"] == "least-recently-stored" and settings["count"] == 2
    assert "disk_evil" not in settings and "close" not in settings
    assert not marker.exists()
    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(folder))
    monkeypatch.delenv("VLSCOPE_CACHE_BACKEND", raising=False)
    code, out, err = run_cli("cache", "stats")  # a sound table: nothing more to report
    assert code == 0 and "entries:  2 (1 inputs)" in out and "corrupt:  0" in out


def test_break10_cache_db_that_is_not_sqlite_is_a_clear_error(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "cache.db").write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(folder))
    monkeypatch.delenv("VLSCOPE_CACHE_BACKEND", raising=False)
    code, _, err = run_cli("cache", "stats")
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"error: The result cache database {folder.resolve() / 'cache.db'} cannot be read")
    assert "Move the folder" in err and len(err.strip().splitlines()) == 1


# --- D12c: two batches over the same files ----------------------------------------------------

def test_break12c_two_batches_at_once_do_the_work_once(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for n in range(3):
        _page(folder / f"page{n}.png", [f"PAGE {n} LINE {i} OF THE REPORT 2024" for i in range(4)])
    env = {**os.environ, "VLSCOPE_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    env.pop("VLSCOPE_CACHE_BACKEND", None)
    argv = [sys.executable, "-m", "core.cli", "batch", str(folder), "--stages", "ocr", "--json", "--no-progress"]
    procs = [subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
    reports = [by_file(json.loads(out)) for out, _ in results]
    for name in ("page0.png", "page1.png", "page2.png"):
        how = sorted(r[name]["stages"]["ocr"] for r in reports)
        assert how == ["cached", "computed"], (name, how)  # computed by one batch, read by the other
        assert all(r[name]["pages"] == 1 for r in reports)
    assert sum(r[n]["waited_s"] for r in reports for n in r) > 0  # one batch really waited for the other
    with ResultCache(tmp_path / "cache") as cache:
        from core.library import list_items, load_results

        items = {i.name: i for i in list_items(cache)}
        assert "PAGE 1 LINE 3 OF THE REPORT 2024" in load_results(cache, items["page1.png"].input_hash).ocr_text


def test_break12c_disk_lock_is_shared_and_waits(tmp_path: Path) -> None:
    import threading

    with ResultCache(tmp_path / "c") as first, ResultCache(tmp_path / "c") as second:
        order: list[str] = []
        waited = threading.Event()
        with first.lock("h" * 64, "ocr"):
            def other() -> None:
                with second.lock("h" * 64, "ocr", on_wait=waited.set):
                    order.append("second")

            t = threading.Thread(target=other)
            t.start()
            assert waited.wait(5)
            time.sleep(0.2)
            order.append("first")
        t.join(5)
        assert order == ["first", "second"]
        with pytest.raises(ValueError):
            first.lock("../etc", "ocr").__enter__()


@needs_redis
def test_break12c_redis_lock_is_shared_and_waits(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    import threading

    from core.cache.redis_store import RedisResultCache

    server = RedisServer(tmp_path)
    try:
        with RedisResultCache(server.url) as first, RedisResultCache(server.url) as second:
            order: list[str] = []
            waited = threading.Event()
            with first.lock("h" * 64, "ocr", lease_ms=600):
                def other() -> None:
                    with second.lock("h" * 64, "ocr", on_wait=waited.set, poll_s=0.05):
                        order.append("second")

                t = threading.Thread(target=other)
                t.start()
                assert waited.wait(5)
                time.sleep(1.0)  # longer than the lease: the holder renews it
                assert order == []
                order.append("first")
            t.join(5)
            assert order == ["first", "second"]
            assert not first._client.exists("vlscope:lock:" + "h" * 64 + ":ocr")  # released
    finally:
        server.stop()


# --- made_by: who made each result ------------------------------------------------------------

def test_made_by_is_recorded_through_a_background_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.jobs.registry import JobRegistry

    key = make_key("m" * 64, "ocr-page", {"page": 0})
    anon = make_key("m" * 64, "library.file")
    with ResultCache(tmp_path / "c") as cache:
        cache.put_json(anon, {"name": "scan.png"})  # nobody signed in
        with acting_as("alice"):
            job = JobRegistry().submit("ocr:scan", "OCR scan.png", lambda ctx: cache.put_json(key, {"lines": []}))
        assert job.wait(10) and job.error is None
        made = {e.stage: e.made_by for e in cache.entries("m" * 64)}
        assert made == {"ocr-page": "alice", "library.file": None}
    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.delenv("VLSCOPE_CACHE_BACKEND", raising=False)
    code, out, _ = run_cli("cache", "list")
    lines = {ln.split()[3]: ln.split()[6] for ln in out.strip().splitlines()[:-1]}
    assert code == 0 and lines == {"ocr-page": "alice", "library.file": "-"}
    code, out, _ = run_cli("cache", "list", "--json")
    assert {e["stage"]: e["made_by"] for e in json.loads(out)} == {"ocr-page": "alice", "library.file": None}


def test_made_by_old_caches_stay_readable(tmp_path: Path) -> None:
    key = make_key("o" * 64, "video.scenes")
    with ResultCache(tmp_path / "c") as cache:
        with acting_as("bob"):
            cache.put_json(key, {"cuts": [2.0]})
    db = sqlite3.connect(tmp_path / "c" / "cache.db")  # as a cache written before made_by was recorded
    db.execute("DROP TRIGGER VLScopeEntry_delete")
    db.execute("DROP TABLE VLScopeEntry")
    db.commit()
    db.close()
    with ResultCache(tmp_path / "c") as cache:
        assert cache.get_json(key) == {"cuts": [2.0]}
        assert [(e.stage, e.made_by) for e in cache.entries()] == [("video.scenes", None)]
        with acting_as("carol"):
            cache.put_json(key, {"cuts": [2.0, 4.0]})
        assert [e.made_by for e in cache.entries()] == ["carol"]
        assert cache.delete_input("o" * 64) == 1
        db = sqlite3.connect(tmp_path / "c" / "cache.db")
        assert db.execute("SELECT COUNT(*) FROM VLScopeEntry").fetchone() == (0,)  # goes with its entry
        db.close()


@needs_redis
def test_made_by_on_the_redis_backend(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    from core.cache.redis_store import RedisResultCache

    server = RedisServer(tmp_path)
    try:
        with RedisResultCache(server.url) as cache:
            with acting_as("alice"):
                cache.put_json(make_key("r" * 64, "ocr-page"), {"lines": []})
            cache.put_json(make_key("r" * 64, "library.file"), {"name": "x.png"})
            assert {e.stage: e.made_by for e in cache.entries("r" * 64)} == {"ocr-page": "alice",
                                                                              "library.file": None}
            assert cache.delete_input("r" * 64) == 2
            assert not cache._client.exists("vlscope:made_by:" + "r" * 64)
            # planted keys of the wrong type: a miss for that entry, never a failed listing
            good, planted = make_key("s" * 64, "ocr-page"), make_key("s" * 64, "video.scenes")
            with acting_as("alice"):
                cache.put_json(good, {"lines": []})
                cache.put_json(planted, {"cuts": []})
            cache._client.delete(str(planted))
            cache._client.rpush(str(planted), b"a list, not a value")
            cache._client.delete("vlscope:made_by:" + "s" * 64)
            cache._client.set("vlscope:made_by:" + "s" * 64, b"a string, not a hash")
            assert [(e.stage, e.made_by) for e in cache.entries("s" * 64)] == [("ocr-page", None)]
            assert cache.get_json(planted) is None and cache.stats().corrupt == 1
    finally:
        server.stop()
