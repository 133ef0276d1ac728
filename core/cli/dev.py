"""`vlscope dev tiny-model FOLDER [--arch ...]`: build a tiny random-weight model (Qwen3-VL dense or MoE, Qwen3.5
dense or MoE) to try the app without weights."""

from __future__ import annotations

import argparse

ARCHITECTURES = ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")  # core.vlm.tiny.ARCHITECTURES (no torch import)
NAMES = {"qwen3_vl": "Qwen3-VL", "qwen3_vl_moe": "Qwen3-VL MoE", "qwen3_5": "Qwen3.5", "qwen3_5_moe": "Qwen3.5 MoE"}


def cmd_tiny(args: argparse.Namespace) -> int:
    from core.vlm.tiny import build_tiny_model

    folder = build_tiny_model(args.folder, arch=args.arch)
    print(f"tiny random-weight {NAMES[args.arch]} saved in {folder} (answers are noise); use it with "
          f"VLSCOPE_MODEL={folder}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    dev = sub.add_parser("dev", help="developer tools")
    dsub = dev.add_subparsers(dest="dev_command", metavar="TOOL")
    t = dsub.add_parser("tiny-model", help="build a tiny random-weight model into FOLDER")
    t.add_argument("folder")
    t.add_argument("--arch", default="qwen3_vl", choices=ARCHITECTURES,
                   help="architecture (default qwen3_vl: Qwen3-VL dense)")
    t.set_defaults(func=cmd_tiny)
