"""Clips, the same for the dashboard, the CLI and the API: a stretch of a video (an event, an answer time, a
chapter) exported as a video file and a contact sheet, and "highlights" joining several stretches.

Files go to the `clips` folder of the cache folder (`<cache_dir>/clips`, owner-only), named by the video's
content hash and the stretch, with what was written (method, start, end, length) beside each as JSON: the
same stretch asked for again, by any page, session or front end, is the file already made. The folder is
kept within the size limit of uploads and proxies (`cache_size_limit_gb`, a budget of its own), least
recently used first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from core.errors import UserError
from core.events import CancelToken, Event, Progress
from core.media.clips import (
    KEYFRAME_TOLERANCE_S,
    MODES,
    ClipError,
    ClipResult,
    SheetResult,
    contact_sheet,
    export_clip,
    export_highlights,
    stamp,
)
from core.media.probe import VideoInfo, probe_video

if TYPE_CHECKING:  # pragma: no cover - typing only
    from core.app.context import AppContext

log = logging.getLogger(__name__)

CLIPS_FOLDER = "clips"
POINT_RADIUS_S = 5.0  # a moment (an answer time) becomes the stretch of this many seconds either side
RECENT_S = 300.0  # a clip made or used this recently is never evicted (a page may be offering it)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_RANGE = re.compile(r"\s*(?:–|—|~|\bto\b|-(?=\s*\d))\s*", re.IGNORECASE)
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


# ---------------------------------------------------------------------------------------------- stretches

@dataclass
class Stretch:
    """A stretch of a video to export, in seconds, with the words that name it (an event's label, a chapter title)."""

    start: float
    end: float
    label: str = ""

    def __post_init__(self) -> None:
        self.start, self.end = float(self.start), float(self.end)

    @classmethod
    def of(cls, value: Any, radius: float = POINT_RADIUS_S, duration: float | None = None) -> "Stretch":
        """A Stretch from a Stretch, an Event, a Chapter (any object with start/end and a label or title), a dict with
        start/end(/label or title) or a (start, end[, label]) tuple.

        A moment (start == end, e.g. an answer time) becomes [t - radius, t + radius] within the video.
        """
        if isinstance(value, Stretch):
            s = Stretch(value.start, value.end, value.label)
        elif isinstance(value, Event):
            s = Stretch(value.start, value.end, value.label)
        elif isinstance(value, dict):
            s = Stretch(value["start"], value["end"], str(value.get("label", "") or value.get("title", "") or ""))
        elif hasattr(value, "start") and hasattr(value, "end"):  # a Chapter, an answer's time span...
            s = Stretch(value.start, value.end, str(getattr(value, "label", "") or getattr(value, "title", "") or ""))
        else:
            items = tuple(value)
            s = Stretch(items[0], items[1], str(items[2]) if len(items) > 2 else "")
        if s.end <= s.start + 1e-9 and s.end >= s.start:  # a moment: the seconds around it
            lo = max(0.0, s.start - radius)
            hi = s.start + radius if duration is None else min(duration, s.start + radius)
            s = Stretch(lo, max(hi, lo), s.label)
        return s

    def describe(self) -> str:
        """'3:15.0 – 3:40.0' with the label after it when there is one."""
        span = f"{stamp(self.start)} – {stamp(self.end)}"
        return f"{span} {self.label}".strip() if self.label else span

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


def parse_time(text: str) -> float:
    """Seconds from '3:15', '1:02:03.5', '195', '195.5s', '3m15s' or '3分15秒'; UserError naming the fix otherwise."""
    from core.analysis.timeparse import parse_time_reference

    raw = str(text).strip()
    try:
        value = float(raw)
    except ValueError:
        ref = parse_time_reference(raw)
        if ref is None or not ref.is_point or ref.text.strip() != raw:
            raise UserError(f"{raw!r} is not a time.", "Write it as 3:15, 1:02:03 or 195.5 (seconds).") from None
        return ref.start
    if value != value or value in (float("inf"), float("-inf")):
        raise UserError(f"{raw!r} is not a time.", "Write it as 3:15, 1:02:03 or 195.5 (seconds).")
    return value


def parse_stretches(text: str) -> list[Stretch]:
    """Stretches from '0:10-0:20, 1:00-1:05' (commas or semicolons between them; '-', 'to' or '–' inside)."""
    found: list[Stretch] = []
    for n, part in enumerate((p.strip() for p in re.split(r"[,;\n]", str(text))), 1):
        if not part:
            continue
        ends = _RANGE.split(part)
        if len(ends) != 2 or not all(e.strip() for e in ends):
            raise UserError(f"Stretch {n} ({part!r}) is not a start and an end.",
                            "Write each stretch as START-END, e.g. 0:10-0:20, with commas between stretches.")
        try:
            found.append(Stretch(parse_time(ends[0]), parse_time(ends[1])))
        except UserError as exc:
            raise UserError(f"Stretch {n} ({part!r}): {exc.cause}", exc.fix) from None
    if not found:
        raise UserError("No stretch was given.", "Write stretches as START-END, e.g. 0:10-0:20, 1:00-1:05.")
    return found


# ---------------------------------------------------------------------------------------------- results

@dataclass
class ClipFile:
    """A file made for a stretch (or the highlights), ready to offer: where it is, the name to download it as, what it holds.

    kind: "clip", "sheet" or "highlights". method, reason: how a clip was written ("copy" or "re-encode", and why).
    start, end, duration: the seconds of the source the file holds (probed). detail: the full result of core.media.clips.
    """

    path: str
    name: str
    kind: str
    media_type: str
    size_bytes: int
    start: float
    end: float
    duration: float
    label: str = ""
    method: str = ""
    reason: str = ""
    reused: bool = False
    warnings: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the path is a server path: front ends show `name`, never `path`)."""
        return asdict(self)

    def read_bytes(self) -> bytes:
        """The file's bytes (for a download button); UserError when it went missing meanwhile."""
        try:
            data = Path(self.path).read_bytes()
        except OSError:
            raise UserError(f"The {self.kind} {self.name} is no longer on the server (removed to keep the size "
                            "limit).", "Export it again.") from None
        os.utime(self.path, None)
        return data

    def headers(self) -> dict[str, str]:
        """HTTP headers saying what the file holds (for the API's answer)."""
        out = {"X-VLScope-Kind": self.kind, "X-VLScope-Start": f"{self.start:.3f}",
               "X-VLScope-End": f"{self.end:.3f}", "X-VLScope-Duration": f"{self.duration:.3f}"}
        if self.method:
            out["X-VLScope-Method"] = self.method
        return out

    def summary(self) -> str:
        """One plain line: what the file holds and how it was made."""
        size = _size(self.size_bytes)
        if self.kind == "sheet":
            tiles = len(self.detail.get("times", []))
            return f"Contact sheet: {tiles} frames of {stamp(self.start)} – {stamp(self.end)} ({size})"
        how = {"copy": "copied from the video as it is", "re-encode": "re-encoded"}.get(self.method, self.method)
        if self.kind == "highlights":
            n = len(self.detail.get("segments", []))
            return f"Highlights: {n} stretch{'es' if n != 1 else ''} joined, {self.duration:.1f} s, {how} ({size})"
        return f"Clip: {stamp(self.start)} – {stamp(self.end)}, {self.duration:.1f} s, {how} ({size})"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


def _safe_stem(name: str) -> str:
    stem = Path(name).stem or "video"
    cleaned = re.sub(r"[^\w.-]+", "-", stem, flags=re.UNICODE).strip("-.") or "video"
    return cleaned[:60]


def _span_name(start: float, end: float) -> str:
    def one(t: float) -> str:
        tenths = int(round(t * 10))
        whole, frac = divmod(tenths, 10)
        h, rem = divmod(whole, 3600)
        m, s = divmod(rem, 60)
        text = (f"{h}h{m:02d}m{s:02d}" if h else f"{m}m{s:02d}") + (f".{frac}" if frac else "") + "s"
        return text

    return f"{one(start)}-{one(end)}"


# ---------------------------------------------------------------------------------------------- the service

class ClipService:
    """Export stretches of videos as clips, contact sheets and highlights into the cache folder's `clips` folder."""

    def __init__(self, runtime: "AppContext") -> None:
        self.runtime = runtime

    # -- where files go
    def folder(self) -> Path:
        """The clips folder (created owner-only); UserError when it cannot be created."""
        folder = Path(self.runtime.settings.cache_dir).expanduser() / CLIPS_FOLDER
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UserError(f"The clips folder {folder} cannot be created ({exc.strerror or exc}).",
                            "Set `cache_dir` to a folder the server may write to.") from None
        return folder

    def source(self, video: str | os.PathLike[str], input_hash: str | None = None) -> Path:
        """The video file to cut: a path, or the sha256 of an upload kept in the cache folder. UserError when missing."""
        text = str(video).strip()
        if SHA256.match(text) and not Path(text).exists():
            uploads = Path(self.runtime.settings.cache_dir).expanduser() / "uploads"
            for candidate in sorted(uploads.glob(f"{text}*")) if uploads.is_dir() else []:
                if candidate.is_file() and not candidate.name.endswith(".part"):
                    return candidate
            raise UserError("No stored video has this content hash (it was never uploaded, or was removed to keep "
                            "the size limit).", "Open or upload the video again.")
        path = Path(text).expanduser()
        if not path.is_file():
            raise UserError(f"{path.name or text} is not a file that exists here.", "Check the path of the video.")
        return path

    def _identity(self, path: Path, input_hash: str | None) -> str:
        if input_hash:
            return input_hash[:16]
        st = path.stat()
        return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]

    def probe(self, video: str | os.PathLike[str], input_hash: str | None = None) -> VideoInfo:
        """The probe of the video to cut (kept in the result cache when its hash is given); VideoError when unusable."""
        return self._info(self.source(video, input_hash), input_hash, None)

    def _info(self, path: Path, input_hash: str | None, info: VideoInfo | None) -> VideoInfo:
        if info is not None:
            return info
        video = getattr(self.runtime, "video", None)
        if input_hash and video is not None:
            return video.probe(path, input_hash)  # kept in the result cache
        return probe_video(path)

    # -- the three exports
    def clip(self, video: str | os.PathLike[str], stretch: Any, *, input_hash: str | None = None,
             name: str | None = None, mode: str = "auto", tolerance: float = KEYFRAME_TOLERANCE_S,
             info: VideoInfo | None = None, progress: Progress | None = None,
             cancel: CancelToken | None = None) -> ClipFile:
        """The stretch as a video file (made once; the same stretch again is the same file). ClipError / UserError
        (cause + fix) for a stretch outside the video, an end not after the start, a file that cannot be written."""
        if mode not in MODES:
            raise UserError(f"Unknown clip method {mode!r}.", f"Choose one of {', '.join(MODES)}.")
        path = self.source(video, input_hash)
        info = self._info(path, input_hash, info)
        s = Stretch.of(stretch, duration=info.duration)
        ident = self._identity(path, input_hash)
        base = f"{ident}-{int(round(s.start * 1000))}-{int(round(s.end * 1000))}-{mode}"
        if mode != "re-encode":
            base += f"-{int(round(tolerance * 1000))}"
        out = self.folder() / f"{base}.mp4"
        download = f"{_safe_stem(name or path.name)}-{_span_name(s.start, s.end)}.mp4"

        def make() -> dict[str, Any]:
            return export_clip(path, out, s.start, s.end, mode=mode, tolerance=tolerance, info=info,
                               progress=progress, cancel=cancel).to_dict()

        data, reused = self._made(out, make)
        result = ClipResult.from_dict(data)
        return ClipFile(str(out), download, "clip", "video/mp4", result.size_bytes, result.start, result.end,
                        result.duration, s.label, result.method, result.reason, reused, result.warnings, data)

    def sheet(self, video: str | os.PathLike[str], stretch: Any, *, input_hash: str | None = None,
              name: str | None = None, tiles: int = 12, columns: int = 4, tile_width: int = 320,
              info: VideoInfo | None = None, progress: Progress | None = None,
              cancel: CancelToken | None = None) -> ClipFile:
        """A contact sheet (JPEG) of `tiles` frames of the stretch, each with its time written under it."""
        path = self.source(video, input_hash)
        info = self._info(path, input_hash, info)
        s = Stretch.of(stretch, duration=info.duration)
        ident = self._identity(path, input_hash)
        out = self.folder() / (f"{ident}-{int(round(s.start * 1000))}-{int(round(s.end * 1000))}-sheet-{tiles}x"
                               f"{columns}-{tile_width}.jpg")
        shown_name = Path(name or path.name).name
        download = f"{_safe_stem(shown_name)}-{_span_name(s.start, s.end)}-sheet.jpg"
        title = f"{shown_name} · {s.describe()}"

        def make() -> dict[str, Any]:
            return contact_sheet(path, out, s.start, s.end, tiles=tiles, columns=columns, tile_width=tile_width,
                                 title=title, info=info, progress=progress, cancel=cancel).to_dict()

        data, reused = self._made(out, make)
        result = SheetResult.from_dict(data)
        return ClipFile(str(out), download, "sheet", "image/jpeg", result.size_bytes, s.start, s.end, s.end - s.start,
                        s.label, reused=reused, detail=data)

    def highlights(self, video: str | os.PathLike[str], stretches: Iterable[Any], *, input_hash: str | None = None,
                   name: str | None = None, info: VideoInfo | None = None, progress: Progress | None = None,
                   cancel: CancelToken | None = None) -> ClipFile:
        """The stretches joined, in the order given, into one video file whose length is their sum."""
        path = self.source(video, input_hash)
        info = self._info(path, input_hash, info)
        chosen = [Stretch.of(s, duration=info.duration) for s in stretches]
        if not chosen:
            raise UserError("No stretch was chosen for the highlights.", "Choose at least one stretch.")
        ident = self._identity(path, input_hash)
        digest = hashlib.sha256(json.dumps([[round(s.start, 3), round(s.end, 3)] for s in chosen]).encode()).hexdigest()
        out = self.folder() / f"{ident}-highlights-{digest[:12]}.mp4"
        download = f"{_safe_stem(name or path.name)}-highlights-{len(chosen)}.mp4"

        def make() -> dict[str, Any]:
            return export_highlights(path, out, [(s.start, s.end) for s in chosen], info=info, progress=progress,
                                     cancel=cancel).to_dict()

        data, reused = self._made(out, make)
        result = ClipResult.from_dict(data)
        label = "; ".join(s.label for s in chosen if s.label)
        return ClipFile(str(out), download, "highlights", "video/mp4", result.size_bytes, result.start, result.end,
                        result.duration, label, result.method, result.reason, reused, result.warnings, data)

    # -- made once, kept within the size limit
    def _made(self, out: Path, make: Any) -> tuple[dict[str, Any], bool]:
        """(what `make()` wrote to `out`, reused?): the stored record when `out` was made before."""
        meta = out.with_name(out.name + ".json")
        with _lock(str(out)):
            stored = _read_meta(meta, out)
            if stored is not None:
                now = time.time()
                os.utime(out, (now, now))
                os.utime(meta, (now, now))
                return stored, True
            data = make()
            tmp = meta.with_name(f".{meta.name}.{os.getpid()}.part")
            try:
                tmp.write_text(json.dumps(data))
                os.replace(tmp, meta)
            except OSError as exc:  # the file is made; only its record is missing (it is made again next time)
                log.warning("the record of %s could not be written: %s", out.name, exc)
                tmp.unlink(missing_ok=True)
        self.evict(keep={out, meta})
        return data, False

    def evict(self, limit_bytes: int | None = None, keep: set[Path] | None = None) -> list[Path]:
        """Delete clips (and their records), least recently used first, until the folder fits in `limit_bytes`
        (default: the `cache_size_limit_gb` setting). Files used in the last RECENT_S seconds and `keep` stay."""
        limit = int(self.runtime.settings.cache_size_limit_gb * 1024**3) if limit_bytes is None else int(limit_bytes)
        folder = self.folder()
        keep = keep or set()
        files = []
        for entry in os.scandir(folder):
            if entry.is_file(follow_symlinks=False) and not entry.name.endswith(".json") \
                    and not entry.name.startswith("."):
                st = entry.stat(follow_symlinks=False)
                files.append((Path(entry.path), st.st_size, st.st_mtime))
        total = sum(size for _, size, _ in files)
        removed: list[Path] = []
        now = time.time()
        for p, size, mtime in sorted(files, key=lambda f: f[2]):
            if total <= limit:
                break
            if p in keep or now - mtime < RECENT_S:
                continue
            try:
                p.unlink()
                p.with_name(p.name + ".json").unlink(missing_ok=True)
            except OSError:
                continue
            total -= size
            removed.append(p)
        if removed:
            log.info("size limit of clips: removed %d least recently used file(s)", len(removed))
        return removed


def _lock(key: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def _read_meta(meta: Path, out: Path) -> dict[str, Any] | None:
    if not (meta.is_file() and out.is_file()):
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("size_bytes") != out.stat().st_size:
        return None  # a different or damaged file: made again
    return data


# ---------------------------------------------------------------------------------------------- API entry

def api_clip(runtime: "AppContext", path: str | os.PathLike[str], input_hash: str, name: str, *,
             start: str | None = None, end: str | None = None, highlights: str | None = None,
             output: str = "clip", method: str = "auto", tiles: int = 12,
             cancel: CancelToken | None = None) -> ClipFile:
    """What POST /video/clip answers with: the clip, the contact sheet (`output="sheet"`) or, with `highlights`
    ('0:10-0:20,1:00-1:05'), the highlights file of an uploaded video. UserError (-> 400) for bad times."""
    service = ClipService(runtime)
    if highlights:
        return service.highlights(path, parse_stretches(highlights), input_hash=input_hash, name=name, cancel=cancel)
    if start is None or end is None:
        raise UserError("A clip needs a start and an end.", "Send start and end (e.g. 3:15 and 3:40), or highlights.")
    stretch = Stretch(parse_time(start), parse_time(end))
    if output == "sheet":
        return service.sheet(path, stretch, input_hash=input_hash, name=name, tiles=tiles, cancel=cancel)
    return service.clip(path, stretch, input_hash=input_hash, name=name, mode=method, cancel=cancel)


__all__ = ["CLIPS_FOLDER", "ClipError", "ClipFile", "ClipService", "Stretch", "api_clip", "parse_stretches",
           "parse_time"]
