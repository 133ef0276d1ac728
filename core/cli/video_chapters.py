"""`vlscope video chapters FILE --format md|json|vtt|srt|youtube`: chapters and a summary of a video."""

from __future__ import annotations

import argparse
import sys

from core.analysis.chapters import EXPORT_FORMATS


def cmd_chapters(args: argparse.Namespace) -> int:
    from core.analysis.chapters import export, to_youtube
    from core.cache import hash_file
    from core.cli.video_captions import run_captions

    runtime, info, captions = run_captions(args)
    try:
        sha = hash_file(args.file)
        events = list(captions.events)
        if not args.no_text:
            analysis = runtime.video.analyse(args.file, ("text",), input_hash=sha)
            events += [e for e in analysis.events if e.kind == "text"]
        summary = runtime.video.summarise(info.duration, events, sha, args.max_new_tokens)
    finally:
        runtime.close()
    if not captions.events:
        print(f"note: {captions.message}", file=sys.stderr)
    for p in summary.problems[:5]:
        print(f"note: {p}", file=sys.stderr)
    if args.format == "youtube":
        text, notes = to_youtube(summary)
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        sys.stdout.write(text)
    else:
        sys.stdout.write(export(summary, args.format))
    return 0


def register_video(vsub: argparse._SubParsersAction) -> None:
    from core.cli.video_captions import add_caption_args

    p = vsub.add_parser("chapters", help="chapters and a summary (model needed), exported as md, json, vtt, srt "
                                         "or a YouTube description")
    p.add_argument("file", help="video file")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="md")
    p.add_argument("--no-text", action="store_true", help="do not read on-screen text for the summary")
    add_caption_args(p)
    p.set_defaults(func=cmd_chapters)
