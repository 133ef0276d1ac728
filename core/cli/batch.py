"""`vlscope batch FOLDER --stages scenes,motion,text,ocr`: analyse every file of a folder into the cache.

Videos go through the staged video pipeline (`analyze_video`), images and PDFs through OCR
(`run_ocr`) when the `ocr` stage is asked. Each result lands in the same cache the dashboard
reads, with a Library record (name, kind, path, thumbnail) so the files show on the Library page.
Stages already cached are loaded, not recomputed, so a second or interrupted run resumes at once.
One bad file prints one error line and the batch goes on; the exit code is 1 when any file failed.

Two batches (or a batch and the dashboard's CLI runs) over the same files share the work: each file's
stages are computed under the cache's lock of (content hash, stage), so the second one waits and then
reads the first one's results. With the Redis cache, a server that stops answering mid-batch never
costs computed results: the current file's results are kept in a local disk cache folder (named in one
closing line), later files are not started while it is down, and the next run stores the kept results
on the server before it begins.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from core.events import Progress
from core.cli.errors import CliError

log = logging.getLogger(__name__)

VIDEO_STAGES = ("scenes", "motion", "text")
ALL_STAGES = VIDEO_STAGES + ("ocr",)
DEFAULT_STAGES = "scenes,motion,text,ocr"
BATCH_ORIGIN = "batch"
KEPT_FOLDER = "kept-while-redis-was-down"
"""Folder (inside cache_dir) of the disk cache that keeps results while the Redis server is down."""


@dataclass
class FileOutcome:
    """What happened to one file: `done` (something computed), `cached` (all from the cache), `failed`
    (with `error`) or `skipped` (a kind no asked stage applies to)."""

    file: str
    path: str
    kind: str
    status: str
    input_hash: str = ""
    stages: dict[str, str] = field(default_factory=dict)  # stage -> "computed" | "cached"
    events: int = 0
    pages: int = 0
    seconds: float = 0.0
    waited_s: float = 0.0  # time spent waiting for another process computing the same stages
    error: str = ""
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """The one line printed for this file."""
        if self.status == "failed":
            return f"error: {self.file}: {self.error}"
        if self.status == "skipped":
            return f"skipped  {self.file}: {self.error}"
        done = ", ".join(f"{s}{' (cached)' if how == 'cached' else ''}" for s, how in self.stages.items())
        found = f"{self.events} events" if self.kind == "video" else f"{self.pages} page(s)"
        label = "cached  " if self.status == "cached" else "done    "
        extra = f"; {len(self.warnings)} warning(s)" if self.warnings else ""
        if self.waited_s >= 0.05:
            extra += f"; waited {self.waited_s:.1f} s for another process analysing it"
        return f"{label} {self.file}: {found} [{done}] in {self.seconds:.1f} s{extra}"


def parse_stages(text: str) -> list[str]:
    """The asked stages, in order; CliError naming the unknown ones."""
    stages = list(dict.fromkeys(s.strip().lower() for s in text.split(",") if s.strip()))
    bad = [s for s in stages if s not in ALL_STAGES]
    if bad or not stages:
        raise CliError(f"unknown stage(s) {', '.join(bad) or '(none)'}; choose from {', '.join(ALL_STAGES)}")
    return stages


def find_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The regular files of `folder` (and its sub-folders with `recursive`), sorted; hidden ones left out."""
    if recursive:
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
        return [p for p in found if p.is_file()]
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def analyse_file(path: Path, folder: Path, stages: list[str], runtime: Any,
                 progress: Progress | None = None, refused: str = "") -> FileOutcome:
    """Analyse one file with the asked stages that apply to its kind; never raises for a bad file.
    `refused` (why no file can be analysed now) fails a file that would be analysed, with that reason."""
    from core.cache import hash_file
    from core.files.store import file_kind

    t0 = time.perf_counter()
    kind = file_kind(path.name)
    shown = str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)
    outcome = FileOutcome(file=shown, path=str(path.resolve()), kind=kind, status="done")
    video_stages = [s for s in stages if s in VIDEO_STAGES]
    if kind == "other":
        outcome.status, outcome.error = "skipped", "not a video, image or PDF"
        return outcome
    if kind == "video" and not video_stages:
        outcome.status, outcome.error = "skipped", f"no video stage asked ({', '.join(VIDEO_STAGES)})"
        return outcome
    if kind in ("image", "pdf") and "ocr" not in stages:
        outcome.status, outcome.error = "skipped", "add the `ocr` stage to read images and PDFs"
        return outcome
    if refused:
        outcome.status, outcome.error = "failed", refused
        return outcome

    def report(stage: str, fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message, stage)

    waited = False

    def on_wait() -> None:
        nonlocal waited
        waited = True
        report("wait", 0.0, "another process is analysing this file: waiting for its results")

    try:
        report("hash", 0.0, "hashing")
        outcome.input_hash = hash_file(path)
        with contextlib.ExitStack() as held:
            # one lock per (content hash, stage), in a fixed order: another batch over the same file waits for
            # this one, then finds every result in the cache
            t_lock = time.perf_counter()
            for stage in sorted(video_stages) if kind == "video" else ["ocr"]:
                held.enter_context(runtime.cache.lock(outcome.input_hash, stage, on_wait=on_wait))
            if waited:
                outcome.waited_s = time.perf_counter() - t_lock
            _analyse_locked(path, kind, video_stages, outcome, runtime, report)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad file never stops the batch; its error is one line
        log.debug("batch: %s failed", path, exc_info=True)
        outcome.status, outcome.error = "failed", _one_line(exc)
        outcome.seconds = time.perf_counter() - t0
        return outcome
    outcome.status = "cached" if outcome.stages and all(v == "cached" for v in outcome.stages.values()) else "done"
    outcome.seconds = time.perf_counter() - t0
    return outcome


def _analyse_locked(path: Path, kind: str, video_stages: list[str], outcome: FileOutcome, runtime: Any,
                    report: Callable[[str, float, str], None]) -> None:
    """The work on one file (its locks held): the stages, then its Library record."""
    from core.library import record_file

    cache, settings = runtime.cache, runtime.settings
    if kind == "video":
        result = runtime.video.analyse(path, tuple(video_stages), input_hash=outcome.input_hash,
                                       progress=lambda f, m="", s="": report(s, f, m))
        outcome.stages = {s: "cached" if result.from_cache.get(s) else "computed" for s in video_stages}
        outcome.events = len(result.events)
        outcome.warnings = list(result.warnings)
        if not result.complete:
            outcome.warnings.append("the analysis stopped early (see the warnings); run the batch again to finish it")
    else:
        from core.ocr.pipeline import OcrOptions, run_ocr

        counting = _CountingCache(cache)
        ocr = run_ocr(path, OcrOptions(), name=path.name, settings=settings, cache=counting,
                      progress=lambda f, m="", s="": report("ocr", f, m))
        outcome.pages = len(ocr.pages)
        outcome.stages = {"ocr": "computed" if counting.puts else "cached"}
        outcome.warnings = list(ocr.warnings)
    # the Library page lists files that have a library record (and shows their cached stages)
    record_file(cache, outcome.input_hash, path.name, kind, str(path.resolve()), path.stat().st_size,
                origin=BATCH_ORIGIN, settings=settings)


class _CountingCache:
    """The cache, counting the results stored through it (so a run knows whether it computed anything)."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self.puts = 0

    def put_json(self, key: Any, value: Any) -> None:
        self.puts += 1
        self._cache.put_json(key, value)

    def put_bytes(self, key: Any, value: bytes) -> None:
        self.puts += 1
        self._cache.put_bytes(key, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cache, name)


class _BatchCache:
    """What a batch reads and writes through: the result cache, or, once its Redis server stopped answering,
    a local disk cache folder that keeps the results instead (the next run moves them to the server).

    The current file's results are remembered until it ends, so when the server goes down mid-file they
    are all kept (a server without persistence loses what it held). Later files are refused (`refusal`)
    until the server answers again.
    """

    def __init__(self, backend: Any, kept_dir: Path | None, size_limit_bytes: int) -> None:
        self._backend = backend
        self._kept_dir = kept_dir
        self._size_limit = size_limit_bytes
        self._kept: Any = None
        self._this_file: dict[str, tuple[str, Any, Any]] = {}
        self.outage: BaseException | None = None
        """The CacheUnavailable met when the server stopped answering (None while it answers)."""
        self.moved = 0
        """Kept results stored on the server when it answered again (this run)."""
        if kept_dir is not None:
            backend.raise_when_down = True

    # -- the folder that keeps results while the server is down ---------------------------
    def kept_cache(self) -> Any:
        """The disk cache of kept results (opened on first use)."""
        if self._kept is None:
            from core.cache import ResultCache

            assert self._kept_dir is not None
            self._kept = ResultCache(self._kept_dir, self._size_limit)
        return self._kept

    def kept_count(self) -> int:
        """How many results the kept folder holds now."""
        if self._kept is None and not (self._kept_dir is not None and (self._kept_dir / "cache.db").is_file()):
            return 0
        return len(self.kept_cache().entries())

    def store_kept(self) -> int:
        """Move the kept results to the server; returns how many (CacheUnavailable if it stops answering)."""
        if self.kept_count() == 0:
            return 0
        moved = int(self.kept_cache().move_to(self._backend))
        self.moved += moved
        return moved

    def _went_down(self, exc: BaseException) -> None:
        if self.outage is None:
            self.outage = exc
            kept = self.kept_cache()
            for how, key, value in self._this_file.values():
                getattr(kept, how)(key, value)
            log.info("batch: %s; results are kept in %s", exc, self._kept_dir)

    def _call(self, name: str, *args: Any) -> Any:
        if self.outage is None:
            from core.cache.redis_store import CacheUnavailable

            try:
                return getattr(self._backend, name)(*args)
            except CacheUnavailable as exc:
                self._went_down(exc)
        return getattr(self.kept_cache(), name)(*args)

    # -- per file -------------------------------------------------------------------------
    def refusal(self) -> str:
        """Before a file: '' when it can be analysed; after an outage, the server is asked again (and given the
        kept results when it answers), else the one-line reason the file is not started."""
        self._this_file.clear()
        if self.outage is None:
            return ""
        from core.cache.redis_store import CacheUnavailable

        if self._backend.reachable():
            try:
                self.store_kept()
                self.outage = None
                return ""
            except CacheUnavailable:
                pass
        return (f"not analysed: the Redis server at {self._backend.directory} stopped answering "
                f"({_cause(self.outage)}); restart it and run the batch again")

    def outage_line(self) -> str:
        """The closing line after an outage: what stopped, where the results are kept, what to do."""
        if self.outage is None:
            return ""
        n = self.kept_count()
        kept = f"{n} result(s) kept in {self._kept_dir}" if n else "no computed result was lost"
        return (f"the Redis server at {self._backend.directory} stopped answering ({_cause(self.outage)}); "
                f"{kept}; restart it and run the batch again to store them")

    # -- the cache interface --------------------------------------------------------------
    def get_json(self, key: Any) -> Any:
        return self._call("get_json", key)

    def get_bytes(self, key: Any) -> bytes | None:
        return self._call("get_bytes", key)

    def contains(self, key: Any) -> bool:
        return bool(self._call("contains", key))

    def entries(self, input_hash: str | None = None) -> list[Any]:
        return self._call("entries", input_hash)

    def put_json(self, key: Any, value: Any) -> None:
        self._this_file[str(key)] = ("put_json", key, value)
        self._call("put_json", key, value)

    def put_bytes(self, key: Any, value: bytes) -> None:
        self._this_file[str(key)] = ("put_bytes", key, bytes(value))
        self._call("put_bytes", key, value)

    @contextlib.contextmanager
    def lock(self, input_hash: str, stage: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """The cache's lock of (input, stage); a server that stops answering while it is taken fails the file."""
        from core.cache.redis_store import CacheUnavailable

        if self.outage is not None:
            yield  # the kept folder serves this process only: nothing to share
            return
        try:
            with self._backend.lock(input_hash, stage, on_wait=on_wait):
                yield
        except CacheUnavailable as exc:
            self._went_down(exc)
            raise

    def close(self) -> None:
        if self._kept is not None:
            self._kept.close()
        self._backend.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def _cause(exc: BaseException | None) -> str:
    """The first line of why the server stopped answering (the connection error behind a CacheUnavailable)."""
    if exc is None:
        return ""
    text = str(exc.__cause__ or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _BatchBar:
    """Two rich progress rows on stderr: files done, and the current file's stage."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._progress: Any = None
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:
            return
        self._progress = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("{task.fields[msg]}"),
                                  console=Console(stderr=True), transient=True)
        self._files = self._progress.add_task("files", total=total, msg="")
        self._stage = self._progress.add_task("", total=100, msg="")
        self._progress.start()

    def start_file(self, name: str) -> None:
        if self._progress is not None:
            self._progress.update(self._files, msg=name[-40:])
            self._progress.update(self._stage, completed=0, description="", msg="")

    def stage(self, fraction: float, message: str = "", stage: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._stage, completed=round(100 * max(0.0, min(1.0, fraction))),
                                  description=f"  {stage}", msg=message[:50])

    def end_file(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._files)

    def print(self, line: str, err: bool = False) -> None:
        """A line above the bars (or plainly when there are none)."""
        print(line, file=sys.stderr if err else sys.stdout, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def cmd_batch(args: argparse.Namespace) -> int:
    from core.app import Runtime

    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder; give the folder that holds the videos, images or PDFs")
    folder = folder.resolve()
    stages = parse_stages(args.stages)
    files = find_files(folder, args.recursive)
    base = Runtime.build()
    settings = base.settings
    t0 = time.perf_counter()
    outcomes: list[FileOutcome] = []
    bar = _BatchBar(len(files), enabled=not args.no_progress and not args.json and sys.stderr.isatty())
    redis = getattr(settings, "cache_backend", "disk") == "redis"
    kept_dir = Path(settings.cache_dir).expanduser().resolve() / KEPT_FOLDER if redis else None
    runtime = base.with_cache(lambda inner: _BatchCache(inner, kept_dir, int(settings.cache_size_limit_gb * 1024**3)))
    cache = runtime.cache
    stored_earlier = kept = 0
    outage = ""
    try:
        stored_earlier = cache.store_kept()  # results an earlier run kept while the server was down
        if stored_earlier:
            bar.print(f"note: stored {stored_earlier} result(s) kept in {kept_dir} while the Redis server was down",
                      err=True)
        for path in files:
            bar.start_file(path.name)
            outcome = analyse_file(path, folder, stages, runtime, progress=bar.stage,
                                   refused=cache.refusal())
            outcomes.append(outcome)
            bar.end_file()
            if outcome.status == "failed":  # one line on stderr, in text and JSON modes alike
                bar.print(outcome.summary(), err=True)
            elif not args.json:
                bar.print(outcome.summary())
        outage = cache.outage_line()
        kept = cache.kept_count() if outage else 0
    finally:
        bar.close()
        runtime.close()
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "cached", "failed", "skipped")}
    seconds = time.perf_counter() - t0
    if cache.moved > stored_earlier and not outage:
        print(f"note: the Redis server stopped answering during the batch and came back; the "
              f"{cache.moved - stored_earlier} result(s) kept meanwhile are stored on it", file=sys.stderr)
    if args.json:
        print(json.dumps({"folder": str(folder), "stages": stages, "files": [o.to_dict() for o in outcomes],
                          "counts": counts, "seconds": round(seconds, 3),
                          "kept_results_stored": cache.moved,
                          "cache_outage": {"message": outage, "kept": kept, "folder": str(kept_dir)}
                          if outage else None}, ensure_ascii=False))
    else:
        print(f"{len(outcomes)} files: {counts['done']} analysed, {counts['cached']} from the cache, "
              f"{counts['failed']} failed, {counts['skipped']} skipped in {seconds:.1f} s")
    if outage:
        print(f"error: {outage}", file=sys.stderr)
    return 1 if counts["failed"] or outage else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `vlscope batch`."""
    p = sub.add_parser("batch", help="analyse every video, image and PDF of a folder into the cache (resumable)",
                       description="Analyse every file of a folder: videos with the video stages, images and PDFs "
                       "with OCR. Results fill the dashboard's cache and Library; cached stages are skipped, so "
                       "running again resumes an interrupted batch. Exit code 1 when any file failed.")
    p.add_argument("folder", help="folder holding the files")
    p.add_argument("--stages", default=DEFAULT_STAGES,
                   help=f"comma-separated, from {', '.join(ALL_STAGES)} (default {DEFAULT_STAGES})")
    p.add_argument("--recursive", "-r", action="store_true", help="also the files of sub-folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object: per-file results and counts")
    p.set_defaults(func=cmd_batch)
