"""What the application services need from the process's `Runtime` (a protocol, so the services do not import
the runtime that builds them: the runtime stands above them, they read its parts through this shape)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover - typing only
    from core.cache import CacheBackend
    from core.jobs.registry import JobRegistry
    from core.settings import Settings
    from core.vlm import Engine


class AppContext(Protocol):
    """The settings, the result cache, the one engine (and whether it exists yet), the OCR engines, the jobs."""

    settings: "Settings"
    jobs: "JobRegistry"

    @property
    def cache(self) -> "CacheBackend": ...

    @property
    def engine(self) -> "Engine": ...

    @property
    def engine_made(self) -> bool: ...

    @property
    def ocr(self) -> Any: ...
