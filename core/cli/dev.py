"""`vlscope dev tiny-model FOLDER`: build a tiny random-weight Qwen3-VL to try the app without weights."""

from __future__ import annotations

import argparse


def cmd_tiny(args: argparse.Namespace) -> int:
    from core.vlm.tiny import build_tiny_model

    folder = build_tiny_model(args.folder)
    print(f"tiny random-weight Qwen3-VL saved in {folder} (answers are noise); use it with VLSCOPE_MODEL={folder}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    dev = sub.add_parser("dev", help="developer tools")
    dsub = dev.add_subparsers(dest="dev_command", metavar="TOOL")
    t = dsub.add_parser("tiny-model", help="build a tiny random-weight Qwen3-VL into FOLDER")
    t.add_argument("folder")
    t.set_defaults(func=cmd_tiny)
