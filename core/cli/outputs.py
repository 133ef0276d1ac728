"""Where a command writes a file the user named: checked before any work is done."""

from __future__ import annotations

from pathlib import Path

from core.cli.errors import CliError


def output_file(path: str, force: bool, *, folder_fix: str, options: str) -> Path:
    """`path` as a file this command may write: not a folder (`folder_fix` says what to give instead), in a folder
    that exists, and not an existing file unless `force` (`options` names the flags that choose another name)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise CliError(f"{p} is a folder; {folder_fix}")
    if not p.parent.is_dir():
        raise CliError(f"the folder {p.parent} does not exist; create it first or choose another one")
    if p.exists() and not force:
        raise CliError(f"{p} already exists; give --force to replace it, or another name with {options}")
    return p
