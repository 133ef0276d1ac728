"""`vlscope video ingest FILE`: put a video in the visual memory ahead of any question (decoded, encoded and stored
part by part; an ingest stopped midway resumes where it stopped)."""

from __future__ import annotations

import argparse
import sys

from core.cli.errors import CliError


def cmd_ingest(args: argparse.Namespace) -> int:
    from core.cache import hash_file
    from core.cli.ask import _runtime
    from core.errors import UserError
    from core.media import VideoError

    runtime = _runtime()
    try:
        sha = hash_file(args.file)
        info = runtime.video.probe(args.file, sha)

        def progress(fraction: float, message: str = "", stage: str = "") -> None:
            if sys.stderr.isatty():
                print(f"\r{fraction * 100:5.1f}% {message[:60]:<60}", end="", file=sys.stderr, flush=True)

        done = runtime.video.ingest(args.file, None, sha, info, progress=progress)
    except (VideoError, UserError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        runtime.close()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in done.phases_s.items())
    print(f"{args.file}: {len(done.meta.frame_indices)} frames in {done.parts} parts; {done.reused} already stored, "
          f"{done.encoded} encoded now, in {done.seconds:.1f} s ({phases})")
    return 0


def register_video(vsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = vsub.add_parser("ingest", help="put a video in the visual memory ahead of any question (model needed; "
                                       "resumes where a stopped ingest stopped)")
    p.add_argument("file", help="video file")
    p.set_defaults(func=cmd_ingest)
