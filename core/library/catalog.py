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
from core.cache import CacheKey, ResultCache, make_key

log = logging.getLogger(__name__)
FILE_STAGE = "library.file"
THUMB_STAGE = "library.thumb"
STAGE_LABELS = {
    "video.probe": "probe",
    "video.scenes": "scene cuts",
    "video.motion": "motion",
    "video.text": "on-screen text",
    "video.text.partial": "on-screen text (partial)",
    "video.answers": "questions",
    "ocr-page": "OCR",
    "captions": "captions",
    "chapters": "chapters",
}


def stage_label(stage: str) -> str:
    """The user-facing name of a cache stage."""
    return STAGE_LABELS.get(stage, stage)


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
    thumbnail's pixel limit; its default when None)."""
    old = cache.get_json(_file_key(input_hash)) or {}
    record = {"name": name, "kind": kind, "path": str(path), "size_bytes": int(size_bytes), "origin": origin,
              "added_at": old.get("added_at", time.time())}
    if old != record:
        cache.put_json(_file_key(input_hash), record)
    if thumbnail is None and not cache.contains(_thumb_key(input_hash)):
        thumbnail = make_thumbnail(path, kind, settings=settings)
    if thumbnail:
        cache.put_bytes(_thumb_key(input_hash), thumbnail)
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
    stages = sorted({e.stage for e in entries if not e.stage.startswith("library.")})
    return LibraryItem(
        input_hash=input_hash, name=record.get("name", input_hash[:12]), kind=record.get("kind", "other"),
        added_at=float(record.get("added_at", 0.0)), size_bytes=int(record.get("size_bytes", 0)),
        path=record.get("path", ""), origin=record.get("origin", "upload"),
        stages=[stage_label(s) for s in stages], cache_bytes=sum(_entry_size(cache, e) for e in entries),
        entries=len(entries),
    )


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
    return _item(cache, input_hash, record, cache.entries(input_hash))


def list_items(cache: ResultCache) -> list[LibraryItem]:
    """Every file in the library, most recently added first."""
    by_input: dict[str, list[Any]] = {}
    for entry in cache.entries():
        by_input.setdefault(entry.input_hash, []).append(entry)
    items = []
    for input_hash, entries in by_input.items():
        record = cache.get_json(_file_key(input_hash))
        if record is not None:
            items.append(_item(cache, input_hash, record, entries))
    return sorted(items, key=lambda i: i.added_at, reverse=True)


def _values(cache: ResultCache, input_hash: str, prefix: str) -> list[tuple[str, Any]]:
    out = []
    for entry in cache.entries(input_hash):
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
    for stage, value in _values(cache, input_hash, "video"):
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
    for _, value in _values(cache, input_hash, "captions"):
        events += [Event.from_dict(e) for e in value.get("events", [])]
    for _, value in _values(cache, input_hash, "chapters"):
        res.chapters = value.get("chapters", [])
        res.summary = value.get("summary", "")
    pages: dict[int, dict[str, Any]] = {}
    for _, value in _values(cache, input_hash, "ocr-page"):
        pages.setdefault(int(value.get("index", 0)), value)
    res.ocr_pages = [pages[i] for i in sorted(pages)]
    res.events = sort_events(events)
    return res


def _searchable_text(cache: ResultCache, input_hash: str) -> str:
    res = load_results(cache, input_hash)
    parts = [res.ocr_text, res.summary]
    parts += [e.label for e in res.events if e.kind in ("text", "caption", "vlm", "answer", "chapter")]
    parts += [f"{c.get('title', '')} {c.get('summary', '')}" for c in res.chapters]
    return "\n".join(p for p in parts if p)


@dataclass
class SearchHit:
    """A library item that matched, and where: 'name' and/or a snippet of the text found."""

    item: LibraryItem
    in_name: bool
    snippets: list[str]


def search_items(cache: ResultCache, query: str, in_text: bool = True) -> list[SearchHit]:
    """Items whose file name, or (with `in_text`) OCR text, on-screen text or captions, contain `query` (any case)."""
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
        for n, entry in enumerate(cache.entries(input_hash)):
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
