"""`vlscope video clip FILE --start 3:15 --end 3:40 [--out clip.mp4] [--sheet sheet.jpg]` and
`vlscope video clip FILE --highlights "0:10-0:20,1:00-1:05"`: stretches of a video as files.

The files are made by the clips service (core/app/clips.py) in the cache folder's clips folder (so the
dashboard offers the same files at once) and copied to `--out` / `--sheet`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from core.cli.errors import CliError
from core.cli.outputs import output_file

CLIP_SUFFIXES = (".mp4", ".m4v")
SHEET_SUFFIXES = (".jpg", ".jpeg", ".png")


def _target(path: str, suffixes: tuple[str, ...], force: bool, what: str) -> Path:
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        raise CliError(f"the {what} {p.name!r} needs one of the file types {', '.join(suffixes)}")
    return output_file(path, force, folder_fix=f"give a file name for the {what}", options="--out/--sheet")


def _place(made: Any, target: Path) -> None:
    try:
        if target.suffix.lower() == ".png" and made.kind == "sheet":
            from PIL import Image

            with Image.open(made.path) as img:
                img.save(target, "PNG")
        else:
            shutil.copyfile(made.path, target)
    except OSError as exc:
        raise CliError(f"{target} could not be written ({exc.strerror or exc}); choose a folder you can write to") \
            from None


def _progress(fraction: float, message: str = "", stage: str = "") -> None:
    if sys.stderr.isatty():
        print(f"\r{fraction * 100:5.1f}% {message[:60]:<60}", end="", file=sys.stderr, flush=True)


def cmd_clip(args: argparse.Namespace) -> int:
    from core.app import Runtime
    from core.app.clips import ClipService, Stretch, parse_stretches, parse_time
    from core.cache import hash_file
    from core.errors import UserError
    from core.media import Cancelled, VideoError

    src = Path(args.file)
    if args.highlights:
        if args.start is not None or args.end is not None:
            raise CliError("give either --start and --end (one clip) or --highlights (several joined), not both")
        if args.sheet:
            raise CliError("a contact sheet shows one stretch: use --sheet with --start and --end")
    elif args.start is None or args.end is None:
        raise CliError("give --start and --end (e.g. --start 3:15 --end 3:40), or --highlights \"0:10-0:20,1:00-1:05\"")
    if not src.is_file():
        raise CliError(f"{args.file} is not a file; check the path of the video")
    try:
        stretches = parse_stretches(args.highlights) if args.highlights else [
            Stretch(parse_time(args.start), parse_time(args.end))]
    except UserError as exc:
        raise CliError(str(exc)) from exc
    made: list[tuple[Any, Path]] = []
    runtime = Runtime.build()
    try:
        service = ClipService(runtime)
        sha = hash_file(src)
        info = runtime.video.probe(src, sha)
        if args.highlights:
            out = _target(args.out or f"{src.stem}-highlights-{len(stretches)}.mp4", CLIP_SUFFIXES, args.force,
                          "highlights file")
            made.append((service.highlights(src, stretches, input_hash=sha, info=info, progress=_progress), out))
        else:
            stretch = stretches[0]
            out_to = _target(args.out, CLIP_SUFFIXES, args.force, "clip") if args.out else None
            sheet_to = _target(args.sheet, SHEET_SUFFIXES, args.force, "contact sheet") if args.sheet else None
            clip = service.clip(src, stretch, input_hash=sha, info=info, mode=args.method, progress=_progress)
            out = out_to or _target(clip.name, CLIP_SUFFIXES, args.force, "clip")
            made.append((clip, out))
            if sheet_to is not None:
                sheet = service.sheet(src, stretch, input_hash=sha, info=info, tiles=args.tiles,
                                      columns=args.columns, progress=_progress)
                made.append((sheet, sheet_to))
    except (VideoError, UserError, Cancelled) as exc:
        raise CliError(str(exc)) from exc
    finally:
        runtime.close()
        if sys.stderr.isatty():
            print(file=sys.stderr)
    for item, target in made:
        _place(item, target)
    if args.json:
        print(json.dumps([item.to_dict() | {"written_to": str(target)} for item, target in made], ensure_ascii=False))
        return 0
    for item, target in made:
        print(f"{target}: {item.summary()}")
        if item.kind != "sheet":
            print(f"  {item.reason}")
            for seg in item.detail.get("segments", []):
                print(f"  {seg['start']:9.3f} - {seg['end']:9.3f} s of the video at {seg['at']:.3f} s of the file")
        else:
            times = ", ".join(f"{t:.2f}" for t in item.detail.get("times", []))
            print(f"  frames at {times} s")
        for w in item.warnings:
            print(f"  warning: {w}")
    return 0


def register_video(vsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `vlscope video clip` to the video command group."""
    p = vsub.add_parser("clip", help="a stretch of a video as a video file (and a contact sheet), or highlights "
                                     "joining several stretches",
                        description="Export a stretch of a video as a video file: packets copied when the start is "
                                    "on a key frame, re-encoded otherwise. Times as 3:15, 1:02:03 or 195.5 (seconds).")
    p.add_argument("file", help="video file")
    p.add_argument("--start", help="start of the stretch, e.g. 3:15")
    p.add_argument("--end", help="end of the stretch, e.g. 3:40")
    p.add_argument("--out", help="where to write the clip (.mp4; default: NAME-START-END.mp4 here)")
    p.add_argument("--sheet", help="also write a contact sheet of the stretch here (.jpg or .png)")
    p.add_argument("--tiles", type=int, default=12, help="frames on the contact sheet (default 12)")
    p.add_argument("--columns", type=int, default=4, help="columns of the contact sheet (default 4)")
    p.add_argument("--highlights", help="stretches to join into one file, e.g. \"0:10-0:20,1:00-1:05\"")
    p.add_argument("--method", choices=["auto", "copy", "re-encode"], default="auto",
                   help="auto: copy when the start is on a key frame (within 0.25 s), else re-encode (default)")
    p.add_argument("--force", action="store_true", help="replace files that already exist")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    p.set_defaults(func=cmd_clip)

