"""Turns user-caused errors into one clear line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from core.errors import UserError
from core.settings import SettingsError
from core.vlm.base import EngineError


class CliError(UserError):
    """An error the user can fix; its message is printed as is."""


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    try:
        code = func(args)
        return int(code or 0)
    except (CliError, UserError, SettingsError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"error: file not found: {exc.filename or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; results saved so far are kept in the cache", file=sys.stderr)
        return 130
