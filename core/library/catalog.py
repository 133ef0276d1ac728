"""The library catalog, kept in the result cache itself (so it is shared, persistent and JSON only).

For each file: a `library.file` record (name, kind, date, size, path) and a `library.thumb` JPEG.
Stages done and cache size come from the cache's own entries for that file's sha256; the text a
user can search comes from the stored results (OCR pages, on-screen text, captions, chapters,
answers). Nothing here recomputes an analysis.
"""

from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.events import Event, sort_events
from core.cache import CacheEntry, CacheKey, ResultCache, make_key

log = logging.getLogger(__name__)
FILE_STAGE = "library.file"
THUMB_STAGE = "library.thumb"
STAGE_LABELS = {
    "video.probe": "Video details",
    "video.scenes": "Scene cuts",
    "video.motion": "Motion",
    "video.text": "On-screen text",
    "video.text.partial": "On-screen text (part of the video)",
    "video.answers": "Answers",
    "video.conversation": "Conversation",
    "document.conversation": "Conversation",
    "video.storyboard": "Storyboard",
    "video.default-plan": "Sampling plan",
    "vlm-features": "Visual memory (for questions)",
    "vlm-features-part": "Visual memory (for questions)",
    "ocr-page": "OCR",
    "captions": "Captions",
    "chapters": "Chapters and summary",
    "speech.transcript": "Speech",
    "speech.latest": "Speech",
    "speech.plan": "Speech (part of the video)",
    "speech.chunk": "Speech (part of the video)",
    "transcript": "Speech",
}
"""The user-facing name of each cache stage (the Library never shows the internal names)."""


def stage_label(stage: str) -> str:
    """The user-facing name of a cache stage; an unknown stage in words ("video.colour-map": "Video colour map")."""
    if stage in STAGE_LABELS:
        return STAGE_LABELS[stage]
    words = " ".join(stage.replace(".", " ").replace("-", " ").replace("_", " ").split())
    return words[:1].upper() + words[1:]


def stage_labels(stages: Any) -> list[str]:
    """The names of the stages done, in a fixed order, each once, the library's own records left out."""
    order = {label: n for n, label in enumerate(dict.fromkeys(STAGE_LABELS.values()))}
    labels = {stage_label(s) for s in stages if s and not s.startswith("library.")}
    if "Speech" in labels:  # the finished transcript: the chunks it was made of are not a second item
        labels.discard("Speech (part of the video)")
    return sorted(labels, key=lambda label: (order.get(label, len(order)), label))


@dataclass
class LibraryItem:
    """One analysed file: what it is, when it was added, what was computed and how much the cache holds."""

    input_hash: str
    name: str
    kind: str
    added_at: float
    size_bytes: int
    path: str
    origin: str = "upload"
    stages: list[str] = field(default_factory=list)
    cache_bytes: int = 0
    entries: int = 0

    @property
    def available(self) -> bool:
        """True when the file itself is still on disk (needed to play it or run new analyses)."""
        return bool(self.path) and Path(self.path).is_file()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LibraryResults:
    """What the cache holds for one file, ready to show: events, OCR pages, chapters."""

    events: list[Event] = field(default_factory=list)
    ocr_pages: list[dict[str, Any]] = field(default_factory=list)
    chapters: list[dict[str, Any]] = field(default_factory=list)
    summary: str = ""
    probe: dict[str, Any] | None = None
    transcript: dict[str, Any] | None = None
    """The file's newest finished transcript (core.speech's JSON: segments, language, engine...), or None; its
    segments are in `events` too (kind "speech")."""

    @property
    def ocr_text(self) -> str:
        """The OCR text of every stored page in page order."""
        pages = sorted(self.ocr_pages, key=lambda p: p.get("index", 0))
        return "\n\n".join("\n".join(ln.get("text", "") for ln in p.get("lines", [])) for p in pages)


def _file_key(input_hash: str) -> CacheKey:
    return make_key(input_hash, FILE_STAGE, {})


def _thumb_key(input_hash: str) -> CacheKey:
    return make_key(input_hash, THUMB_STAGE, {})


def _max_image_pixels(settings: Any) -> int:
    """The `max_image_pixels` setting (VLSCOPE_MAX_IMAGE_PIXELS) of `settings`, else its default."""
    if settings is None:
        from core.settings import Settings

        return int(Settings.model_fields["max_image_pixels"].default)
    return int(settings.max_image_pixels)


def make_thumbnail(path: str | Path, kind: str, width: int = 240, settings: Any = None) -> bytes | None:
    """A small JPEG of a video's frame at 10 % of its length, an image, or a PDF's first page; None when impossible.

    Images above the `max_image_pixels` setting are not decoded (the thumbnail is skipped, with the
    guard's message in the log), and decoding holds its memory from the heavy-work bound.
    """
    import cv2
    import numpy as np

    from core.ocr.types import OcrError

    try:
        if kind == "video":
            from core.media import SamplingPlan, probe_video, sample_video

            info = probe_video(path)
            t = info.duration * 0.1
            plan = SamplingPlan(fps=1.0, min_frames=2, max_frames=2, start=t, end=min(info.duration, t + 2.0),
                                total_pixels=width * width * 2)
            frames = sample_video(info, plan).frames
            if not frames:
                return None
            rgb = frames[0].image
        else:
            from core.ocr.loading import iter_pages

            page = next(iter_pages(str(path), "1", 50, _max_image_pixels(settings), 1, False, settings))
            rgb = page.image
        rgb = np.asarray(rgb)
        h, w = rgb.shape[:2]
        scale = width / max(1, w)
        small = cv2.resize(rgb, (width, max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
        return bytes(buf) if ok else None
    except OcrError as exc:  # too large, damaged, or the server is busy: no thumbnail, and the reason logged
        log.warning("no thumbnail for %s: %s", Path(path).name, exc)
        return None
    except Exception:  # noqa: BLE001 - a missing thumbnail never stops anything
        return None


def record_file(cache: ResultCache, input_hash: str, name: str, kind: str, path: str, size_bytes: int,
                origin: str = "upload", thumbnail: bytes | None = None, settings: Any = None) -> LibraryItem:
    """Add (or refresh) a file in the library; the first date it was added is kept (`settings` give the
    thumbnail's pixel limit; its default when None). A file no thumbnail could be made of (damaged, not what
    its name says, above the pixel limit) is recorded as not readable: the Library lists it only once
    something was computed from it, so a failed upload is not an item."""
    old = cache.get_json(_file_key(input_hash)) or {}
    had_thumb = cache.contains(_thumb_key(input_hash))
    if thumbnail is None and not had_thumb:
        thumbnail = make_thumbnail(path, kind, settings=settings)
    if thumbnail:
        cache.put_bytes(_thumb_key(input_hash), thumbnail)
    record = {"name": name, "kind": kind, "path": str(path), "size_bytes": int(size_bytes), "origin": origin,
              "added_at": old.get("added_at", time.time()), "readable": bool(thumbnail) or had_thumb}
    if old != record:
        cache.put_json(_file_key(input_hash), record)
    item = get_item(cache, input_hash)
    if item is None:  # the write did not stick (e.g. a Redis server that stopped answering)
        from core.errors import UserError

        raise UserError(f"The library entry of {name} could not be stored: the result cache did not keep it.",
                        "Check that the cache is reachable (vlscope cache stats) and open the file again.")
    return item


def thumbnail_of(cache: ResultCache, input_hash: str) -> bytes | None:
    """The file's thumbnail JPEG, or None."""
    return cache.get_bytes(_thumb_key(input_hash))


def _item(cache: ResultCache, input_hash: str, record: dict[str, Any], entries: list[Any]) -> LibraryItem:
    stages = {e.stage for e in entries}
    return LibraryItem(
        input_hash=input_hash, name=record.get("name", input_hash[:12]), kind=record.get("kind", "other"),
        added_at=float(record.get("added_at", 0.0)), size_bytes=int(record.get("size_bytes", 0)),
        path=record.get("path", ""), origin=record.get("origin", "upload"),
        stages=stage_labels(stages), cache_bytes=sum(_entry_size(cache, e) for e in entries),
        entries=len(entries),
    )


def input_entries(cache: Any, input_hash: str) -> list[CacheEntry]:
    """The cache entries of one file, newest first. On a disk cache through its tag index (the entries are
    tagged with their input's hash): `ResultCache.entries(input_hash)` reads every row of the cache, 0.7 s
    with 60,000 entries, which opening one item of a large library would pay once per kind of result."""
    if not isinstance(cache, ResultCache):
        return cache.entries(input_hash)
    rows = cache._sql(  # noqa: SLF001 - a read of the cache's own table through its connection
        "SELECT key, store_time, CASE WHEN filename IS NULL THEN length(value) ELSE size END FROM Cache "
        "WHERE tag = ? AND typeof(key) = 'text' AND raw = 1", (input_hash,)).fetchall()
    out = []
    for key_text, stored, size in rows:
        key = CacheKey.parse(key_text)
        if key is not None and key.input_hash == input_hash and isinstance(stored, (int, float)):
            out.append(CacheEntry(key_text, input_hash, key.stage, int(size or 0), float(stored)))
    return sorted(out, key=lambda e: e.stored_at, reverse=True)


def _entry_size(cache: ResultCache, entry: Any) -> int:
    if entry.size_bytes:
        return int(entry.size_bytes)
    row = cache._cache._sql("SELECT length(value) FROM Cache WHERE key = ?", (entry.key,)).fetchone()  # noqa: SLF001
    return int(row[0] or 0) if row else 0


def get_item(cache: ResultCache, input_hash: str) -> LibraryItem | None:
    """One library item by sha256, or None when it is not in the library."""
    record = cache.get_json(_file_key(input_hash))
    if record is None:
        return None
    return _item(cache, input_hash, record, input_entries(cache, input_hash))


def _listed(record: dict[str, Any], entries: list[Any]) -> bool:
    """A file is an item once something was computed from it, or when it could be read when it was added."""
    if any(not e.stage.startswith("library.") for e in entries):
        return True
    readable = record.get("readable")
    return bool(readable) if readable is not None else any(e.stage == THUMB_STAGE for e in entries)


def list_items(cache: ResultCache) -> list[LibraryItem]:
    """Every file in the library, most recently added first (failed uploads left out: see `record_file`).
    Reads every entry of the cache: the Library page lists through the index (`core.library.index`)."""
    by_input: dict[str, list[Any]] = {}
    for entry in cache.entries():
        by_input.setdefault(entry.input_hash, []).append(entry)
    items = []
    for input_hash, entries in by_input.items():
        record = cache.get_json(_file_key(input_hash))
        if record is not None and _listed(record, entries):
            items.append(_item(cache, input_hash, record, entries))
    return sorted(items, key=lambda i: i.added_at, reverse=True)


def _values(cache: ResultCache, input_hash: str, prefix: str,
            entries: list[CacheEntry] | None = None) -> list[tuple[str, Any]]:
    out = []
    for entry in entries if entries is not None else input_entries(cache, input_hash):
        if entry.stage == prefix or entry.stage.startswith(prefix + "."):
            key = CacheKey.parse(entry.key)
            value = cache.get_json(key) if key is not None else None
            if value is not None:
                out.append((entry.stage, value))
    return out


def load_results(cache: ResultCache, input_hash: str) -> LibraryResults:
    """Everything stored for one file, read from the cache (nothing is recomputed)."""
    from core.analysis.video_pipeline import _events_of

    res = LibraryResults()
    events: list[Event] = []
    seen_stage: set[str] = set()
    entries = input_entries(cache, input_hash)
    for stage, value in _values(cache, input_hash, "video", entries):
        name = stage.removeprefix("video.")
        if name == "probe":
            res.probe = value
        elif name in ("scenes", "motion", "text") and name not in seen_stage:
            seen_stage.add(name)
            try:
                events += _events_of(name, value)
            except Exception:  # noqa: BLE001 - an entry of an older shape is skipped
                pass
        elif name == "answers":
            events += [Event.from_dict(e) for e in value.get("events", [])]
    for _, value in _values(cache, input_hash, "captions", entries):
        events += [Event.from_dict(e) for e in value.get("events", [])]
    for _, value in _values(cache, input_hash, "chapters", entries):
        res.chapters = value.get("chapters", [])
        res.summary = value.get("summary", "")
    for _, value in _values(cache, input_hash, "speech.transcript", [e for e in entries
                                                                     if e.stage == "speech.transcript"]):
        if isinstance(value, dict) and isinstance(value.get("segments"), list):
            res.transcript = value  # entries come newest first: the transcript made last
            events += [Event("speech", float(s.get("start", 0.0)), float(s.get("end", s.get("start", 0.0))),
                             " ".join(str(s.get("text", "")).split()), {"engine": value.get("engine")},
                             source="speech") for s in value["segments"]
                       if isinstance(s, dict) and str(s.get("text", "")).strip()]
            break
    pages: dict[int, dict[str, Any]] = {}
    for _, value in _values(cache, input_hash, "ocr-page", entries):
        pages.setdefault(int(value.get("index", 0)), value)
    res.ocr_pages = [pages[i] for i in sorted(pages)]
    res.events = sort_events(events)
    return res


def _searchable_text(cache: ResultCache, input_hash: str) -> str:
    res = load_results(cache, input_hash)
    parts = [res.ocr_text, res.summary]
    parts += [e.label for e in res.events if e.kind in ("text", "caption", "vlm", "answer", "chapter", "speech")]
    parts += [f"{c.get('title', '')} {c.get('summary', '')}" for c in res.chapters]
    return "\n".join(p for p in parts if p)


@dataclass
class SearchHit:
    """A library item that matched, and where: 'name' and/or a snippet of the text found."""

    item: LibraryItem
    in_name: bool
    snippets: list[str]


def search_items(cache: ResultCache, query: str, in_text: bool = True) -> list[SearchHit]:
    """Items whose file name, or (with `in_text`) OCR text, on-screen text or captions, contain `query` (any case).

    Reads every stored result of every file on each call (the baseline of benchmarks/library_search.py);
    the Library page searches the full-text index instead (`core.library.index.LibraryIndex.search`)."""
    q = query.strip().lower()
    items = list_items(cache)
    if not q:
        return [SearchHit(i, False, []) for i in items]
    hits = []
    for item in items:
        in_name = q in item.name.lower()
        snippets: list[str] = []
        if in_text:
            text = _searchable_text(cache, item.input_hash)
            low = text.lower()
            start = 0
            while len(snippets) < 3 and (pos := low.find(q, start)) >= 0:
                lo, hi = max(0, pos - 40), min(len(text), pos + len(q) + 40)
                snippets.append(("…" if lo else "") + " ".join(text[lo:hi].split()) + ("…" if hi < len(text) else ""))
                start = pos + len(q)
        if in_name or snippets:
            hits.append(SearchHit(item, in_name, snippets))
    return hits


def delete_item(cache: ResultCache, input_hash: str, cache_dir: str | Path | None = None) -> int:
    """Remove a file's results (and its uploaded copy and proxy under `cache_dir`); returns entries removed."""
    removed = cache.delete_input(input_hash)
    if cache_dir is not None:
        for folder in ("uploads", "proxies"):
            for p in (Path(cache_dir) / folder).glob(f"{input_hash}*"):
                if p.is_file() and not p.is_symlink():
                    p.unlink()
    return removed


def export_item(cache: ResultCache, input_hash: str) -> bytes:
    """A zip of everything stored for one file: each JSON result, the thumbnail, and a readable events.json."""
    buf = io.BytesIO()
    item = get_item(cache, input_hash)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if item is not None:
            zf.writestr("item.json", json.dumps(item.to_dict(), indent=2, ensure_ascii=False))
        res = load_results(cache, input_hash)
        zf.writestr("events.json", json.dumps([e.to_dict() for e in res.events], indent=2, ensure_ascii=False))
        if res.ocr_pages:
            zf.writestr("ocr.txt", res.ocr_text)
        for n, entry in enumerate(input_entries(cache, input_hash)):
            key = CacheKey.parse(entry.key)
            if key is None:
                continue
            if entry.stage == THUMB_STAGE:
                data = cache.get_bytes(key)
                if data:
                    zf.writestr("thumbnail.jpg", data)
                continue
            value = cache.get_json(key)
            if value is not None:
                zf.writestr(f"results/{n:03d}-{entry.stage}.json", json.dumps(value, indent=2, ensure_ascii=False))
    return buf.getvalue()
