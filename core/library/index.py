"""The library's full-text index: SQLite FTS5 in one file beside the result cache (`library-index.sqlite3`).

What it holds, per stored result (read from the cache, never recomputed): the text a user searches with
where it was found: on-screen text (`video.text`, and the readings of an unfinished pass,
`video.text.partial`), OCR pages (`ocr-page`, with their page number), captions and chapters (`captions`,
`chapters`, with their times), answers (`video.answers` and the turns of `video.conversation` and
`document.conversation`, at the answer's first time), speech (the finished transcripts of core.speech, stage
`speech.transcript`, value `{"segments": [{"start", "end", "text"}, ...]}`: one passage per segment at its time)
and file names (`library.file`). Beside the text it keeps every cache entry it has seen (stage, size, time) and
each file's library record, so the Library lists thousands of files without reading the cache.

Kept up to date without a listener in the cache: every search and listing first calls `sync()`, which
compares the cache's entry count and newest store time with what it indexed (one small query when
nothing changed), indexes what was stored since and forgets what was deleted or evicted; results written
by any process sharing the cache (the CLI, the API) are found the same way. `on_stored(key, value)` indexes
one result at the moment it is stored, and `store_listener(index)` wraps it for a store hook of the cache
(off the storing thread). `rebuild()` makes the index again from the cache; a damaged index file is reported
(`problems`), removed and rebuilt.

Ranking: bm25 among the RANK_WINDOW (2,000) most recently stored places that match, so a word found in
20,000 places costs what 2,000 cost; counts beyond the window are given as "at least" (`SearchResult.more`).

Tokens: FTS5's unicode61 tokenizer (case and diacritics folded) with every CJK, kana, Thai, Lao, Khmer
and Myanmar character made a token of its own (those scripts write words without spaces), so a query of
any length in Chinese or Japanese is a phrase of characters; words in other scripts match by prefix.
Snippets are plain text with the matched spans given as offsets: nothing in them is HTML or Markdown.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import sqlite3
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

from core.cache import CacheBackend, CacheKey, ResultCache

log = logging.getLogger(__name__)

INDEX_NAME = "library-index.sqlite3"
SCHEMA = 1
FILE_STAGE = "library.file"

# where a text was found, in a user's words, by cache stage (the search's "stage" filter uses these)
TEXT_STAGES: dict[str, str] = {
    "library.file": "File name",
    "video.text": "On-screen text",
    "video.text.partial": "On-screen text (part of the video)",
    "ocr-page": "OCR text",
    "captions": "Captions",
    "chapters": "Chapters",
    "video.answers": "Answers",
    "video.conversation": "Answers",
    "document.conversation": "Answers",
    "speech.transcript": "Speech",
    "transcript": "Speech",
}
# the stage filter as a user picks it: one choice may cover several stages
STAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "On-screen text": ("video.text", "video.text.partial"),
    "OCR text": ("ocr-page",),
    "Captions": ("captions",),
    "Chapters and summary": ("chapters",),
    "Answers": ("video.answers", "video.conversation", "document.conversation"),
    "Speech": ("speech.transcript", "transcript"),
    "File name": ("library.file",),
}
FILE_KINDS: dict[str, str] = {"video": "Video", "image": "Image", "pdf": "PDF", "other": "Other"}

_UNSPACED = ("\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3040-\u30ff"
             "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f")
"""Characters of scripts written without spaces between words (CJK, kana, Thai, Lao, Myanmar, Khmer)."""
_SPLIT = re.compile(f"[{_UNSPACED}]")
_RUN = re.compile(f"[{_UNSPACED}]+")
_WORDY = re.compile(r"\w")
_EDGES = re.compile(r"^\W+|\W+$")


def fts_text(text: str) -> str:
    """`text` as the index tokenizes it: every CJK/kana/Thai/... character set apart by spaces."""
    if not _SPLIT.search(text):
        return text
    return _RUN.sub(lambda m: " " + " ".join(m.group()) + " ", text)


def match_query(query: str) -> str | None:
    """The FTS5 MATCH expression for what a user typed: every word must be found (any order); words of
    spaced scripts match by prefix ("light" finds "lights"), CJK runs as a phrase of characters. User text is
    always quoted, so FTS5's own syntax (AND, NEAR, *, ^, :) in a query is just text. None: nothing to find."""
    parts = []
    for term in query.split():
        tokens = fts_text(term).split()
        words = [t for t in tokens if _WORDY.search(t)]
        if not words:
            continue
        phrase = '"' + " ".join(words).replace('"', '""') + '"'
        prefix = not _SPLIT.fullmatch(words[-1])
        parts.append(phrase + ("*" if prefix else ""))
    return " ".join(parts) if parts else None


@dataclass
class Snippet:
    """A short plain-text excerpt around what matched; `marks` are (start, end) offsets of the matched words."""

    text: str
    marks: list[tuple[int, int]] = field(default_factory=list)

    def parts(self) -> list[tuple[str, bool]]:
        """The excerpt cut into (text, matched) pieces in order."""
        out: list[tuple[str, bool]] = []
        pos = 0
        for a, b in self.marks:
            if a > pos:
                out.append((self.text[pos:a], False))
            out.append((self.text[a:b], True))
            pos = b
        if pos < len(self.text):
            out.append((self.text[pos:], False))
        return out


@lru_cache(maxsize=65536)
def _fold_char(ch: str) -> str:
    base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c)) or ch
    folded = base.casefold()
    return folded[0] if folded else ch


def _fold(text: str) -> str:
    """One character per character of `text`, case and accents folded (so offsets stay those of `text`)."""
    low = text.lower()
    if len(low) == len(text) and low.isascii():
        return low
    return "".join(_fold_char(c) for c in text)


def _find_all(haystack: str, terms: list[str]) -> list[tuple[int, int]]:
    spans = []
    for term in terms:
        start = 0
        while (pos := haystack.find(term, start)) >= 0:
            spans.append((pos, pos + len(term)))
            start = pos + len(term)
    return sorted(spans)


def make_snippet(text: str, query: str, width: int = 180) -> Snippet:
    """About `width` characters of `text` around the first place a word of `query` appears, with every
    appearance inside it marked; the start of the text when no word appears literally."""
    text = " ".join(text.split())
    words = [_EDGES.sub("", t) for t in query.split() if _WORDY.search(t)]
    low = text.lower()
    spans = []
    if len(low) == len(text):  # the fast way (no accents to fold): plain lower case
        spans = _find_all(low, sorted({w.lower() for w in words}, key=len, reverse=True))
    if not spans:
        spans = _find_all(_fold(text), sorted({_fold(w) for w in words}, key=len, reverse=True))
    first = spans[0][0] if spans else 0
    lo = max(0, first - width // 3)
    if lo:
        space = text.rfind(" ", lo - 15, lo)
        lo = space + 1 if space >= 0 else lo
    hi = min(len(text), lo + width)
    if hi < len(text):
        space = text.find(" ", hi - 15, hi + 15)
        hi = space if space >= 0 else hi
    lead = "…" if lo else ""
    trail = "…" if hi < len(text) else ""
    marks, last = [], -1
    for a, b in spans:
        if a >= lo and b <= hi and a >= last:
            marks.append((a - lo + len(lead), b - lo + len(lead)))
            last = b
    return Snippet(lead + text[lo:hi] + trail, marks)


@dataclass
class Passage:
    """One searchable piece of a stored result: its text, where it was found and when (or on which page)."""

    text: str
    start: float | None = None
    end: float | None = None
    page: int | None = None


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _event_passages(events: Any) -> list[Passage]:
    out = []
    for e in events if isinstance(events, list) else []:
        if isinstance(e, dict) and str(e.get("label", "")).strip():
            out.append(Passage(str(e["label"]), _num(e.get("start")), _num(e.get("end"))))
    return out


def passages_of(stage: str, value: Any) -> list[Passage]:
    """The searchable text of one stored result of `stage` (empty for stages without text)."""
    if not isinstance(value, dict):
        return []
    if stage == FILE_STAGE:
        return [Passage(str(value.get("name", "")))] if value.get("name") else []
    if stage == "ocr-page":
        lines = [str(ln.get("text", "")) for ln in value.get("lines", []) if isinstance(ln, dict)]
        index = value.get("index", 0)
        page = int(index) + 1 if isinstance(index, int) else 1
        text = "\n".join(t for t in lines if t.strip())
        return [Passage(text, page=page)] if text else []
    if stage == "video.text":
        return [Passage(str(s.get("text", "")), _num(s.get("start")), _num(s.get("end")))
                for s in value.get("spans", []) if isinstance(s, dict) and str(s.get("text", "")).strip()]
    if stage == "video.text.partial":
        out: list[Passage] = []
        for r in value.get("readings", []):
            if not isinstance(r, dict):
                continue
            text = " ".join(str(ln.get("text", "")) for ln in r.get("lines", []) if isinstance(ln, dict)).strip()
            t = _num(r.get("time"))
            if not text:
                continue
            if out and out[-1].text == text:
                out[-1].end = t
            else:
                out.append(Passage(text, t, t))
        return out
    if stage == "captions":
        return _event_passages(value.get("events"))
    if stage == "chapters":
        out = []
        for ch in value.get("chapters", []):
            if isinstance(ch, dict):
                text = " — ".join(str(ch.get(k, "")).strip() for k in ("title", "summary") if str(ch.get(k, "")).strip())
                if text:
                    out.append(Passage(text, _num(ch.get("start")), _num(ch.get("end"))))
        if str(value.get("summary", "")).strip():
            out.append(Passage(str(value["summary"])))
        return out
    if stage == "video.answers":
        events = _event_passages(value.get("events"))
        answer = "\n".join(str(value.get(k, "")).strip() for k in ("question", "text") if str(value.get(k, "")).strip())
        first = min((e.start for e in events if e.start is not None), default=None)
        return ([Passage(answer, first)] if answer else []) + [e for e in events if e.text.strip() not in answer]
    if stage in ("video.conversation", "document.conversation"):
        out = []
        for turn in value.get("turns", []):
            if not isinstance(turn, dict):
                continue
            text = "\n".join(str(turn.get(k, "")).strip() for k in ("question", "answer") if str(turn.get(k, "")).strip())
            times = [e.start for e in _event_passages(turn.get("events")) if e.start is not None]
            if text:
                out.append(Passage(text, min(times) if times and stage == "video.conversation" else None))
        return out
    if stage in ("speech.transcript", "transcript"):
        return [Passage(str(s.get("text", "")), _num(s.get("start")), _num(s.get("end")))
                for s in value.get("segments", []) if isinstance(s, dict) and str(s.get("text", "")).strip()]
    return []


@dataclass
class IndexHit:
    """One place a query was found: which file, in which stored result, at which time or page, and an excerpt."""

    input_hash: str
    name: str
    kind: str
    """The file's kind: "video", "image", "pdf" or "other"."""
    stage: str
    """The cache stage of the result the text comes from (e.g. "video.text")."""
    start: float | None
    """Seconds into the video (None: no time, e.g. a document or a file name)."""
    page: int | None
    """Page number, 1-based, for OCR text."""
    snippet: Snippet
    added_at: float
    score: float

    @property
    def stage_label(self) -> str:
        """Where the text was found, in a user's words."""
        return TEXT_STAGES.get(self.stage, self.stage)

    def link_params(self) -> dict[str, str]:
        """Query parameters that open the file on its page at this place: file, and t (seconds) or page."""
        params = {"file": self.input_hash}
        if self.start is not None and self.kind == "video":
            params["t"] = f"{self.start:g}"
        elif self.page is not None:
            params["page"] = str(self.page)
        return params


@dataclass
class SearchResult:
    """The hits of one search (best first) and how many places and files matched: exact, or at least that
    many when `more` (a query found in more places than the ranking window looks at)."""

    hits: list[IndexHit]
    total: int
    files: int
    more: bool = False
    seconds: float = 0.0


@dataclass
class SyncReport:
    """What one `sync` did."""

    indexed: int = 0
    removed: int = 0
    seconds: float = 0.0
    full: bool = False


RANK_WINDOW = 2000
"""Hits are ranked by relevance (bm25) among the most recently stored places that match, at most this many:
a word found in 20,000 places costs what 2,000 cost (and the newest results come first among equals)."""

_DDL = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS input (id INTEGER PRIMARY KEY, input_hash TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS entry (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, input INTEGER NOT NULL,
    stage TEXT NOT NULL, stored_at REAL, size INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS entry_input ON entry (input);
CREATE TABLE IF NOT EXISTS file (input INTEGER PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL,
    added_at REAL NOT NULL, size_bytes INTEGER NOT NULL, path TEXT NOT NULL, origin TEXT NOT NULL, readable INTEGER);
CREATE INDEX IF NOT EXISTS file_added ON file (added_at);
CREATE TABLE IF NOT EXISTS passage (id INTEGER PRIMARY KEY, entry INTEGER NOT NULL, input INTEGER NOT NULL,
    stage TEXT NOT NULL, t REAL, page INTEGER);
CREATE INDEX IF NOT EXISTS passage_entry ON passage (entry);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(body, text UNINDEXED, tokenize='unicode61 remove_diacritics 2');
"""


class IndexDamaged(Exception):
    """The index file could not be read (it is rebuilt)."""


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _chunks(values: list[Any], size: int = 500) -> Iterator[list[Any]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


class LibraryIndex:
    """The full-text index of one result cache, in `folder`/library-index.sqlite3 (one per folder and process:
    use `open_index`). Thread-safe; several processes may share the file."""

    def __init__(self, cache: CacheBackend, folder: str | Path) -> None:
        self.cache = cache
        self.path = Path(folder).expanduser().resolve() / INDEX_NAME
        self.problems: list[str] = []
        self._lock = threading.RLock()
        self._con: sqlite3.Connection | None = None
        self._open()

    # ------------------------------------------------------------------ the file
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages: the passage rows of 10,000 files stay in memory
            con.executescript(_DDL)
            row = con.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
            if row is None:
                con.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA,))
            elif row[0] != SCHEMA:
                raise IndexDamaged(f"it was made by another version (schema {row[0]!r})")
            con.execute("SELECT count(*) FROM fts WHERE fts MATCH 'x'").fetchone()
        except BaseException:
            con.close()
            raise
        try:
            self.path.chmod(0o600)
        except OSError:
            pass
        return con

    def _open(self) -> None:
        try:
            self._con = self._connect()
        except (sqlite3.DatabaseError, IndexDamaged) as exc:
            self._reset(exc)

    def _reset(self, exc: BaseException) -> None:
        """Forget a damaged index file and start an empty one (the next sync fills it from the cache)."""
        problem = f"The library's search index could not be read ({exc}); it was rebuilt from the stored results."
        self.problems.append(problem)
        log.warning("%s: %s", self.path, problem)
        if self._con is not None:
            try:
                self._con.close()
            except sqlite3.Error:
                pass
            self._con = None
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.is_file() and not p.is_symlink():
                p.unlink()
        self._con = self._connect()

    def _run(self, work: Any) -> Any:
        """Run `work(con)` under the lock; a damaged index is rebuilt once and the work tried again."""
        with self._lock:
            if self._con is None:
                self._open()
            try:
                return work(self._con)
            except (sqlite3.DatabaseError, IndexDamaged) as exc:
                if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise
                self._reset(exc)
                self._sync(self._con, force=True)
                return work(self._con)

    def close(self) -> None:
        """Close the index file (a later call opens it again)."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    # ------------------------------------------------------------------ reading the cache
    def _cache_state(self) -> tuple[int, float]:
        """(entries, newest store time) of the cache: two lookups on a disk cache (its entry counter and the
        store-time index)."""
        if isinstance(self.cache, ResultCache):
            sql = self.cache._sql  # noqa: SLF001 - read-only queries on the cache's own connection
            row = sql("SELECT value FROM Settings WHERE key = 'count'").fetchone()
            count = row[0] if row is not None and type(row[0]) is int else sql("SELECT count(*) FROM Cache").fetchone()[0]
            newest = sql("SELECT max(store_time) FROM Cache").fetchone()[0]
            return int(count or 0), float(newest or 0.0)
        entries = self.cache.entries()
        return len(entries), max((e.stored_at for e in entries), default=0.0)

    def _cache_rows(self, since: float | None) -> list[tuple[str, float, int]]:
        """(key, stored at, size) of the cache's entries stored at or after `since` (None: all)."""
        if isinstance(self.cache, ResultCache):
            sql = ("SELECT key, store_time, CASE WHEN filename IS NULL THEN length(value) ELSE size END FROM Cache "
                   "WHERE typeof(key) = 'text' AND raw = 1")
            args: tuple[Any, ...] = ()
            if since is not None:
                sql += " AND store_time >= ?"
                args = (since,)
            rows = self.cache._sql(sql, args).fetchall()  # noqa: SLF001
            return [(k, float(s or 0.0), int(z or 0)) for k, s, z in rows]
        return [(e.key, e.stored_at, e.size_bytes) for e in self.cache.entries()
                if since is None or e.stored_at >= since]

    def _value(self, key: CacheKey) -> Any:
        try:
            return self.cache.get_json(key)
        except Exception as exc:  # noqa: BLE001 - an unreadable entry is left out of the index, never fatal
            log.warning("library index: %s could not be read: %s", key, exc)
            return None

    # ------------------------------------------------------------------ writing
    @staticmethod
    def _input_id(con: sqlite3.Connection, input_hash: str) -> int:
        con.execute("INSERT OR IGNORE INTO input (input_hash) VALUES (?)", (input_hash,))
        return con.execute("SELECT id FROM input WHERE input_hash = ?", (input_hash,)).fetchone()[0]

    @staticmethod
    def _forget(con: sqlite3.Connection, key: str) -> None:
        row = con.execute("SELECT id, input, stage FROM entry WHERE key = ?", (key,)).fetchone()
        if row is None:
            return
        entry, input_id, stage = row
        ids = [r[0] for r in con.execute("SELECT id FROM passage WHERE entry = ?", (entry,))]
        for part in _chunks(ids):
            con.execute(f"DELETE FROM fts WHERE rowid IN ({_marks(len(part))})", part)
            con.execute(f"DELETE FROM passage WHERE id IN ({_marks(len(part))})", part)
        con.execute("DELETE FROM entry WHERE id = ?", (entry,))
        if stage == FILE_STAGE:
            con.execute("DELETE FROM file WHERE input = ?", (input_id,))

    def _index(self, con: sqlite3.Connection, key: CacheKey, value: Any, stored_at: float | None, size: int) -> None:
        text_key = str(key)
        self._forget(con, text_key)
        input_id = self._input_id(con, key.input_hash)
        entry = con.execute("INSERT INTO entry (key, input, stage, stored_at, size) VALUES (?, ?, ?, ?, ?)",
                            (text_key, input_id, key.stage, stored_at, size)).lastrowid
        if key.stage not in TEXT_STAGES:
            return
        if value is None:
            value = self._value(key)
        if key.stage == FILE_STAGE and isinstance(value, dict):
            readable = None if "readable" not in value else int(bool(value["readable"]))
            con.execute("INSERT OR REPLACE INTO file VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
                input_id, str(value.get("name") or key.input_hash[:12]), str(value.get("kind") or "other"),
                _num(value.get("added_at")) or 0.0, int(value.get("size_bytes") or 0), str(value.get("path") or ""),
                str(value.get("origin") or "upload"), readable))
        passages = passages_of(key.stage, value)
        if not passages:
            return
        first = con.execute("SELECT coalesce(max(id), 0) + 1 FROM passage").fetchone()[0]
        con.executemany("INSERT INTO passage (id, entry, input, stage, t, page) VALUES (?, ?, ?, ?, ?, ?)",
                        [(first + n, entry, input_id, key.stage, p.start, p.page) for n, p in enumerate(passages)])
        bodies = [(first + n, fts_text(p.text), p.text) for n, p in enumerate(passages)]
        con.executemany("INSERT INTO fts (rowid, body, text) VALUES (?, ?, ?)",
                        [(i, body, None if body == text else text) for i, body, text in bodies])

    def on_stored(self, key: CacheKey, value: Any) -> None:
        """Index one result as it is stored (for a store hook of the cache); `value` is its JSON value, or None
        for bytes (only its entry is recorded). The next `sync` finds it indexed and does not read it again."""
        def work(con: sqlite3.Connection) -> None:
            con.execute("BEGIN IMMEDIATE")
            try:
                self._index(con, key, value, None, 0)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        self._run(work)

    def forget_input(self, input_hash: str) -> int:
        """Forget every entry of one file at once (after its results were deleted from the cache), so the next
        sync has nothing to look for; returns how many entries were forgotten."""
        def work(con: sqlite3.Connection) -> int:
            keys = [r[0] for r in con.execute("SELECT e.key FROM entry e JOIN input i ON i.id = e.input "
                                              "WHERE i.input_hash = ?", (input_hash,))]
            con.execute("BEGIN IMMEDIATE")
            try:
                for key in keys:
                    self._forget(con, key)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return len(keys)
        return self._run(work)

    def sync(self) -> SyncReport:
        """Index what the cache stored since the last sync, forget what it no longer holds."""
        return self._run(lambda con: self._sync(con))

    def sync_for_reading(self) -> None:
        """`sync`, unless another process holds the index for writing longer than the wait: then this read
        uses the index as it is (reported in `problems`) rather than failing."""
        try:
            self.sync()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            self.problems.append("The search index is being updated by another process: the newest results may be "
                                 "missing from this search.")

    def _sync(self, con: sqlite3.Connection, force: bool = False) -> SyncReport:
        t0 = time.perf_counter()
        report = SyncReport()
        count, newest = self._cache_state()
        seen = dict(con.execute("SELECT name, value FROM meta WHERE name IN ('count', 'newest', 'untracked')"))
        if not force and seen.get("count") == count and seen.get("newest") == newest:
            return report
        con.execute("BEGIN IMMEDIATE")
        try:
            untracked = int(seen.get("untracked") or 0)  # rows of the cache no entry stands for (tampered keys)
            if force or "newest" not in seen:  # the first sync, or a rebuild: every entry
                report.full = True
                self._sync_every_entry(con, report)
            else:
                # what was stored since the last sync (a second of margin for writers that committed late)
                rows = self._cache_rows(float(seen["newest"]) - 1.0)
                known = {}
                for part in _chunks([k for k, _, _ in rows]):
                    known.update(con.execute(f"SELECT key, stored_at FROM entry WHERE key IN ({_marks(len(part))})",
                                             part).fetchall())
                self._apply(con, rows, known, report)
                if con.execute("SELECT count(*) FROM entry").fetchone()[0] + untracked != count:
                    self._reconcile(con, report)  # something was removed or evicted (or stored out of order)
            untracked = max(0, count - con.execute("SELECT count(*) FROM entry").fetchone()[0])
            con.execute("INSERT OR REPLACE INTO meta VALUES ('count', ?), ('newest', ?), ('untracked', ?)",
                        (count, newest, untracked))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        report.seconds = time.perf_counter() - t0
        if report.indexed or report.removed:
            log.info("library index: %d indexed, %d removed in %.2f s", report.indexed, report.removed, report.seconds)
        return report

    def _apply(self, con: sqlite3.Connection, rows: list[tuple[str, float, int]], known: dict[str, Any],
               report: SyncReport) -> None:
        """Index the cache `rows` (key, stored at, size) that are new or changed against `known` (key: stored at)."""
        for key_text, stored, size in rows:
            if key_text in known:
                if known[key_text] is None:  # indexed when stored (on_stored): record its time and size only
                    con.execute("UPDATE entry SET stored_at = ?, size = ? WHERE key = ?", (stored, size, key_text))
                    continue
                if known[key_text] == stored:
                    continue
            key = CacheKey.parse(key_text)
            if key is None:  # another schema version: it misses in the cache too; only its entry is kept
                self._forget(con, key_text)
                parts = key_text.split("/")
                owner = self._input_id(con, parts[1]) if len(parts) == 4 and parts[1] else 0
                con.execute("INSERT INTO entry (key, input, stage, stored_at, size) VALUES (?, ?, '', ?, ?)",
                            (key_text, owner, stored, size))
                continue
            self._index(con, key, None, stored, size)
            report.indexed += 1
            if report.indexed % 1000 == 0:  # a long catch-up commits as it goes (other processes may write)
                con.execute("COMMIT")
                con.execute("BEGIN IMMEDIATE")

    def _sync_every_entry(self, con: sqlite3.Connection, report: SyncReport) -> None:
        """Index every entry of the cache that is new or changed and forget every indexed one it no longer holds."""
        rows = self._cache_rows(None)
        known = {k: s for k, s in con.execute("SELECT key, stored_at FROM entry")}
        self._apply(con, rows, known, report)
        present = {k for k, _, _ in rows}
        for key_text in [k for k in known if k not in present]:
            self._forget(con, key_text)
            report.removed += 1

    def _reconcile(self, con: sqlite3.Connection, report: SyncReport) -> None:
        """Find what the cache no longer holds (and anything missed): on a disk cache by comparing the number of
        entries per file (the cache's tag index: 20-40 ms for 60,000 entries), then the keys of the files that
        differ; on another backend by comparing every key."""
        if not isinstance(self.cache, ResultCache):
            self._sync_every_entry(con, report)
            return
        sql = self.cache._sql  # noqa: SLF001 - read-only queries on the cache's own connection
        in_cache = dict(sql("SELECT tag, count(*) FROM Cache WHERE typeof(tag) = 'text' GROUP BY tag").fetchall())
        in_index = dict(con.execute("SELECT i.input_hash, count(*) FROM entry e JOIN input i ON i.id = e.input "
                                    "GROUP BY e.input").fetchall())
        for input_hash in [h for h in in_cache.keys() | in_index.keys() if in_cache.get(h) != in_index.get(h)]:
            rows = [(k, float(s or 0.0), int(z or 0)) for k, s, z in sql(
                "SELECT key, store_time, CASE WHEN filename IS NULL THEN length(value) ELSE size END FROM Cache "
                "WHERE tag = ? AND typeof(key) = 'text' AND raw = 1", (input_hash,)).fetchall()]
            known = dict(con.execute("SELECT e.key, e.stored_at FROM entry e JOIN input i ON i.id = e.input "
                                     "WHERE i.input_hash = ?", (input_hash,)).fetchall())
            self._apply(con, rows, known, report)
            present = {k for k, _, _ in rows}
            for key_text in [k for k in known if k not in present]:
                self._forget(con, key_text)
                report.removed += 1

    def rebuild(self) -> SyncReport:
        """Make the index again from every result in the cache."""
        def work(con: sqlite3.Connection) -> SyncReport:
            for table in ("fts", "passage", "entry", "file", "input"):
                con.execute(f"DELETE FROM {table}")
            con.execute("DELETE FROM meta WHERE name IN ('count', 'newest', 'untracked')")
            return self._sync(con, force=True)
        return self._run(work)

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _filters(kinds: Iterable[str] | None, stages: Iterable[str] | None, since: float | None,
                 until: float | None) -> tuple[str, list[Any]]:
        sql, args = "", []
        if kinds:
            kinds = list(kinds)
            sql += f" AND f.kind IN ({_marks(len(kinds))})"
            args += kinds
        if stages:
            stages = list(stages)
            sql += f" AND p.stage IN ({_marks(len(stages))})"
            args += stages
        if since is not None:
            sql += " AND f.added_at >= ?"
            args.append(since)
        if until is not None:
            sql += " AND f.added_at < ?"
            args.append(until)
        return sql, args

    def search(self, query: str, kinds: Iterable[str] | None = None, stages: Iterable[str] | None = None,
               since: float | None = None, until: float | None = None, limit: int = 50,
               per_file: int = 5, sync: bool = True) -> SearchResult:
        """The places where every word of `query` is found, best first: at most `limit` hits, `per_file` per
        file. Filters: file `kinds` ("video", "image", "pdf"), cache `stages` (see STAGE_GROUPS), files added
        between `since` and `until` (epoch seconds). Ranked by relevance among the RANK_WINDOW most recently
        stored matching places."""
        t0 = time.perf_counter()
        if sync:
            self.sync_for_reading()
        expr = match_query(query)
        if expr is None:
            return SearchResult([], 0, 0, seconds=time.perf_counter() - t0)
        where, args = self._filters(kinds, stages, since, until)
        window = max(RANK_WINDOW, limit)

        def work(con: sqlite3.Connection) -> SearchResult:
            rows = con.execute(
                f"SELECT fts.rowid, p.input, p.stage, p.t, p.page, fts.rank FROM fts "
                f"JOIN passage p ON p.id = fts.rowid JOIN file f ON f.input = p.input "
                f"WHERE fts MATCH ?{where} ORDER BY fts.rowid DESC LIMIT ?", [expr, *args, window]).fetchall()
            more = len(rows) >= window
            total = len(rows)
            if more and not where:
                total = con.execute("SELECT count(*) FROM fts WHERE fts MATCH ?", (expr,)).fetchone()[0]
            files_seen = len({r[1] for r in rows})
            rows.sort(key=lambda r: r[5])
            per: dict[int, int] = {}
            best = []
            for r in rows:
                if per.get(r[1], 0) < per_file:
                    per[r[1]] = per.get(r[1], 0) + 1
                    best.append(r)
                    if len(best) >= limit:
                        break
            if not best:
                return SearchResult([], 0, 0)
            ids = [r[0] for r in best]
            texts = {i: t if t is not None else b for i, b, t in con.execute(
                f"SELECT rowid, body, text FROM fts WHERE rowid IN ({_marks(len(ids))})", ids)}
            inputs = sorted(per)
            files = {i: (h, n, k, a) for i, h, n, k, a in con.execute(
                f"SELECT f.input, i.input_hash, f.name, f.kind, f.added_at FROM file f JOIN input i ON i.id = f.input "
                f"WHERE f.input IN ({_marks(len(inputs))})", inputs)}
            hits = []
            for pid, input_id, stage, t, page, score in best:
                input_hash, name, kind, added = files[input_id]
                hits.append(IndexHit(input_hash, name, kind, stage, t, page, make_snippet(texts.get(pid, ""), query),
                                     added, float(score)))
            return SearchResult(hits, int(total), files_seen, more)

        result = self._run(work)
        result.seconds = time.perf_counter() - t0
        return result

    def items(self, kinds: Iterable[str] | None = None, since: float | None = None, until: float | None = None,
              offset: int = 0, limit: int | None = None, sync: bool = True) -> tuple[list[Any], int]:
        """Library files (`catalog.LibraryItem`), most recently added first, and how many match the filters in
        all. A file with no stored result is listed only when it could be read when it was added (a failed
        upload is not an item; records older than that flag: when it has a thumbnail)."""
        if sync:
            self.sync_for_reading()
        where, args = self._filters(kinds, None, since, until)
        shown = ("(f.readable = 1 OR EXISTS (SELECT 1 FROM entry e WHERE e.input = f.input AND "
                 "(e.stage NOT LIKE 'library.%' OR (f.readable IS NULL AND e.stage = 'library.thumb'))))")

        def work(con: sqlite3.Connection) -> tuple[list[Any], int]:
            total = con.execute(f"SELECT count(*) FROM file f WHERE {shown}{where}", args).fetchone()[0]
            rows = con.execute(f"SELECT f.input, i.input_hash, f.name, f.kind, f.added_at, f.size_bytes, f.path, "
                               f"f.origin FROM file f JOIN input i ON i.id = f.input WHERE {shown}{where} "
                               f"ORDER BY f.added_at DESC LIMIT ? OFFSET ?",
                               [*args, -1 if limit is None else limit, offset]).fetchall()
            by_input: dict[int, list[tuple[str, int]]] = {r[0]: [] for r in rows}
            for part in _chunks(list(by_input)):
                for i, stage, size in con.execute(f"SELECT input, stage, size FROM entry WHERE input IN "
                                                  f"({_marks(len(part))})", part):
                    by_input[i].append((stage, size))
            from core.library.catalog import LibraryItem, stage_labels

            out = [LibraryItem(h, n, k, a, s, p, o, stage_labels(st for st, _ in by_input[i]),
                               sum(z for _, z in by_input[i]), len(by_input[i])) for i, h, n, k, a, s, p, o in rows]
            return out, int(total)

        return self._run(work)

    def keys_of(self, input_hash: str) -> list[str]:
        """The cache keys of one file's entries the index knows of."""
        return self._run(lambda con: [r[0] for r in con.execute(
            "SELECT e.key FROM entry e JOIN input i ON i.id = e.input WHERE i.input_hash = ?", (input_hash,))])

    def counts(self) -> dict[str, int]:
        """How much the index holds: entries, files, passages."""
        def work(con: sqlite3.Connection) -> dict[str, int]:
            return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("entry", "file", "passage")}
        return self._run(work)


_OPEN: dict[tuple[int, str], LibraryIndex] = {}
_OPEN_LOCK = threading.Lock()


def store_listener(index: LibraryIndex) -> Any:
    """A `listener(key, value)` for a store hook of the cache: it hands each stored result to `index.on_stored`
    on a background thread, so a store never waits for the index (a result the thread has not reached, or
    could not index, is found by the next `sync`)."""
    work: queue.SimpleQueue[tuple[CacheKey, Any]] = queue.SimpleQueue()
    started = threading.Event()

    def drain() -> None:
        while True:
            key, value = work.get()
            try:
                index.on_stored(key, value)
            except Exception as exc:  # noqa: BLE001 - the next sync indexes it
                log.warning("library index: %s not indexed when stored (%s); the next search indexes it", key, exc)

    def listener(key: CacheKey, value: Any) -> None:
        if not started.is_set():
            with _OPEN_LOCK:
                if not started.is_set():
                    threading.Thread(target=drain, name="library-index", daemon=True).start()
                    started.set()
        work.put((key, value))

    return listener


def index_folder(cache: CacheBackend, fallback: str | Path | None = None) -> Path:
    """Where the index of `cache` lives: a disk cache's own folder; for another backend (Redis) `fallback`
    (the `cache_dir` setting): each machine keeps its own index of the shared results."""
    if isinstance(cache, ResultCache):
        return cache.directory
    if fallback is None:
        from core.settings import Settings

        fallback = str(Settings.model_fields["cache_dir"].default)
    return Path(fallback).expanduser().resolve()


def open_index(cache: CacheBackend, fallback: str | Path | None = None) -> LibraryIndex:
    """The one LibraryIndex of `cache` in this process (opened, not synced, on first use)."""
    folder = index_folder(cache, fallback)
    ident = (id(cache), str(folder))
    with _OPEN_LOCK:
        index = _OPEN.get(ident)
        if index is None or index.cache is not cache:
            index = _OPEN[ident] = LibraryIndex(cache, folder)
        return index
