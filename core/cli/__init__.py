"""`vlscope`: the same analyses as the dashboard, from a terminal, filling the same cache.

Subcommands live in sibling modules, each with a `register(subparsers)` function.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules that add subcommands; a module that does not exist yet is skipped.
SUBCOMMAND_MODULES = ["core.cli.base", "core.cli.video", "core.cli.ocr", "core.cli.ask", "core.cli.dev", "core.cli.batch",
                      "core.cli.serve", "core.cli.users"]


def present_modules(names: list[str]) -> list:
    """The modules among `names` that exist (a subcommand module not written yet is skipped)."""
    found = []
    for name in names:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlscope", description="Understand long videos and documents with Qwen3-VL.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in present_modules(SUBCOMMAND_MODULES):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vlscope` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from core.cli.errors import run_command

    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
