"""`vlscope batch FOLDER --stages scenes,motion,text,ocr`: analyse every file of a folder into the cache.

Videos go through the staged video pipeline (`analyze_video`), images and PDFs through OCR
(`run_ocr`) when the `ocr` stage is asked. Each result lands in the same cache the dashboard
reads, with a Library record (name, kind, path, thumbnail) so the files show on the Library page.
Stages already cached are loaded, not recomputed, so a second or interrupted run resumes at once.
One bad file prints one error line and the batch goes on; the exit code is 1 when any file failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from core.cli.errors import CliError

log = logging.getLogger(__name__)

VIDEO_STAGES = ("scenes", "motion", "text")
ALL_STAGES = VIDEO_STAGES + ("ocr",)
DEFAULT_STAGES = "scenes,motion,text,ocr"
BATCH_ORIGIN = "batch"


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


def analyse_file(path: Path, folder: Path, stages: list[str], cache: Any, settings: Any,
                 progress: Callable[[str, float, str], None] | None = None) -> FileOutcome:
    """Analyse one file with the asked stages that apply to its kind; never raises for a bad file."""
    from core.cache import hash_file
    from core.files.store import file_kind
    from core.library import record_file

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

    def report(stage: str, fraction: float, message: str) -> None:
        if progress is not None:
            progress(stage, fraction, message)

    try:
        report("hash", 0.0, "hashing")
        outcome.input_hash = hash_file(path)
        if kind == "video":
            from core.analysis.video_pipeline import analyze_video

            result = analyze_video(path, stages=video_stages, cache=cache, progress=report,
                                   input_hash=outcome.input_hash)
            outcome.stages = {s: "cached" if result.from_cache.get(s) else "computed" for s in video_stages}
            outcome.events = len(result.events)
            outcome.warnings = list(result.warnings)
            if not result.complete:
                outcome.warnings.append("the analysis stopped early (see the warnings); run the batch again to finish it")
        else:
            from core.ocr.pipeline import OcrOptions, run_ocr

            counting = _CountingCache(cache)
            ocr = run_ocr(path, OcrOptions(), name=path.name, settings=settings, cache=counting,
                          progress=lambda done, total, msg: report("ocr", done / max(1, total), msg))
            outcome.pages = len(ocr.pages)
            outcome.stages = {"ocr": "computed" if counting.puts else "cached"}
            outcome.warnings = list(ocr.warnings)
        # the Library page lists files that have a library record (and shows their cached stages)
        record_file(cache, outcome.input_hash, path.name, kind, str(path.resolve()), path.stat().st_size,
                    origin=BATCH_ORIGIN)
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

    def stage(self, stage: str, fraction: float, message: str) -> None:
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
    from core.cache import open_cache
    from core.settings import load_settings

    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder; give the folder that holds the videos, images or PDFs")
    folder = folder.resolve()
    stages = parse_stages(args.stages)
    files = find_files(folder, args.recursive)
    settings = load_settings()
    t0 = time.perf_counter()
    outcomes: list[FileOutcome] = []
    bar = _BatchBar(len(files), enabled=not args.no_progress and not args.json and sys.stderr.isatty())
    try:
        with open_cache(settings) as cache:
            for path in files:
                bar.start_file(path.name)
                outcome = analyse_file(path, folder, stages, cache, settings, progress=bar.stage)
                outcomes.append(outcome)
                bar.end_file()
                if outcome.status == "failed":  # one line on stderr, in text and JSON modes alike
                    bar.print(outcome.summary(), err=True)
                elif not args.json:
                    bar.print(outcome.summary())
    finally:
        bar.close()
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "cached", "failed", "skipped")}
    seconds = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"folder": str(folder), "stages": stages, "files": [o.to_dict() for o in outcomes],
                          "counts": counts, "seconds": round(seconds, 3)}, ensure_ascii=False))
    else:
        print(f"{len(outcomes)} files: {counts['done']} analysed, {counts['cached']} from the cache, "
              f"{counts['failed']} failed, {counts['skipped']} skipped in {seconds:.1f} s")
    return 1 if counts["failed"] else 0


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
