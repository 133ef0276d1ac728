"""`vlscope ask FILE "question"`: a question about a video, an image or PDF pages."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.cli.errors import CliError

def _runtime():
    """The runtime of this command, with its engine loaded (ModelUnavailable / EngineError: one clear line)."""
    from core.app import Runtime

    runtime = Runtime.build()
    runtime.engine.load()
    return runtime


def _params(args: argparse.Namespace):
    from core.vlm import GenerationParams

    if args.temperature is None:
        return GenerationParams(max_new_tokens=args.max_new_tokens, seed=args.seed)
    return GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                            presence_penalty=0.0 if args.temperature == 0 else 1.5)


def cmd_ask(args: argparse.Namespace) -> int:
    from core.app.video import is_video

    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path} does not exist")
    if is_video(path):
        return _ask_video(args, path)
    return _ask_document(args, path)


def _ask_video(args: argparse.Namespace, path: Path) -> int:
    from core.cache import hash_file
    from core.media import SamplingPlan

    runtime = _runtime()
    try:
        plan = SamplingPlan(fps=args.fps, max_frames=args.max_frames)
        sha = hash_file(path)
        qa = runtime.video.questions(path, plan, sha)
        for chunk in runtime.video.stream_ask(qa, args.question, _params(args), refine=not args.no_refine):
            if not args.json:
                print(chunk, end="", flush=True)
        result = qa.last_result
        if result is not None:
            runtime.video.save_answer(sha, plan, args.question, result)
    finally:
        runtime.close()
    assert result is not None
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print()
    for e in result.events:
        flag = f"  [{e.detail['flag']}]" if e.detail.get("flag") else ""
        print(f"  {e.start:8.1f} s  {e.label}{flag}")
    for w in result.warnings:
        print(f"note: {w}", file=sys.stderr)
    return 0


def _ask_document(args: argparse.Namespace, path: Path) -> int:
    runtime = _runtime()
    try:
        result = runtime.documents.ask(path, args.question, pages=args.pages, ocr=args.ocr, params=_params(args))
    finally:
        runtime.close()
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print(result.text)
    for b in result.boxes:
        print(f"  box on page {b.page + 1}: ({b.x1:.0f}, {b.y1:.0f})-({b.x2:.0f}, {b.y2:.0f}) {b.label}")
    for w in result.warnings:
        print(f"note: {w}", file=sys.stderr)
    return 0


def add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=512, help="answer length cap (default 512)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the model card's 0.7)")
    p.add_argument("--seed", type=int, default=None, help="make sampling repeatable")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="ask a question about a video, an image or PDF pages",
                       description="Ask a question about a video (times in the question are understood, e.g. "
                                   "'what happens at 3:15?' or '第3分15秒发生了什么'), an image or PDF pages.")
    p.add_argument("file")
    p.add_argument("question")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--fps", type=float, default=2.0, help="video: overview samples per second (default 2)")
    p.add_argument("--max-frames", type=int, default=768, help="video: most frames the model sees (default 768)")
    p.add_argument("--no-refine", action="store_true", help="video: skip the second, finer look at named times")
    p.add_argument("--pages", default="1", help="PDF: 1-based pages, e.g. 1-3 (default 1)")
    p.add_argument("--ocr", action="store_true", help="image/PDF: read the text first and give it to the model")
    add_generation_args(p)
    p.set_defaults(func=cmd_ask)
