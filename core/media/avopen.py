"""The one place that opens a file with PyAV for reading, across PyAV versions.

PyAV <= 18 decodes container metadata with `metadata_errors="strict"` unless told otherwise (a tag
in another encoding then fails the open); PyAV 19 removed the argument (metadata is always read
with `surrogateescape`) and rejects it. `open_input` passes it only where the installed PyAV has it.
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


@functools.cache
def accepts_metadata_errors() -> bool:
    """True when the installed `av.open` takes `metadata_errors` (PyAV <= 18), by signature or version."""
    import av

    try:
        params = inspect.signature(av.open).parameters
    except (TypeError, ValueError):  # compiled without a signature (every PyAV wheel so far)
        params = None
    if params is not None:
        if "metadata_errors" in params:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return False
    return _major(str(av.__version__)) < 19


def open_input(path: str | os.PathLike[str], timeout: float | None = 30) -> Any:
    """`av.open(path)` for reading, tolerant of badly encoded metadata on every PyAV version."""
    import av

    kwargs: dict[str, Any] = {"timeout": timeout}
    if accepts_metadata_errors():
        kwargs["metadata_errors"] = "ignore"
    return av.open(str(path), **kwargs)
