"""`vlscope video captions FILE`: dense, timestamped captions of a long video (cached per chunk)."""

from __future__ import annotations

import argparse
import json
import sys

from core.cli.errors import CliError


def run_captions(args: argparse.Namespace):
    """Captions of `args.file` with the options on the command line (shared with `video chapters`)."""
    from core.analysis.summary import CaptionOptions
    from core.cache import hash_file
    from core.cli.ask import _runtime
    from core.media import Cancelled, VideoError

    try:
        options = CaptionOptions(chunk_s=args.chunk, overlap_s=args.overlap, fps=args.fps,
                                 max_new_tokens=args.max_new_tokens)
        runtime = _runtime()
        info = runtime.video.probe(args.file, hash_file(args.file))
    except (VideoError, ValueError) as exc:
        raise CliError(str(exc)) from exc

    def progress(fraction: float, message: str = "", stage: str = "") -> None:
        if sys.stderr.isatty():
            print(f"\r{fraction * 100:5.1f}% {message[:60]:<60}", end="", file=sys.stderr, flush=True)

    try:
        captions = runtime.video.captions(args.file, options, hash_file(args.file), info, progress=progress)
    except (VideoError, Cancelled) as exc:
        runtime.close()
        raise CliError(str(exc)) from exc
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return runtime, info, captions


def cmd_captions(args: argparse.Namespace) -> int:
    runtime, _, captions = run_captions(args)
    runtime.close()
    if args.json:
        print(json.dumps(captions.to_dict(), ensure_ascii=False, indent=2))
        return 0
    from core.analysis.timeparse import format_timestamp

    for e in captions.events:
        print(f"[{format_timestamp(e.start)}-{format_timestamp(e.end)}] {e.label}")
    print(captions.message, file=sys.stderr)
    return 0


def add_caption_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chunk", type=float, default=60.0, help="chunk length in seconds (default 60)")
    p.add_argument("--overlap", type=float, default=5.0, help="overlap between chunks in seconds (default 5)")
    p.add_argument("--fps", type=float, default=1.0, help="frames per second inside a chunk (default 1)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="token cap per chunk (default 512)")


def register_video(vsub: argparse._SubParsersAction) -> None:
    p = vsub.add_parser("captions", help="dense timestamped captions (model needed; cached per chunk, resumable)")
    p.add_argument("file", help="video file")
    add_caption_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_captions)
