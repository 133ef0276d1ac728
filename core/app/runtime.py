"""The `Runtime`: what a process needs to serve users, built once and passed down.

The dashboard builds it with `st.cache_resource`, the API in its lifespan, the CLI per command. It
holds the settings, the result cache (opened on first use), the one model engine (created on first
use, shared by every session, request and OCR run), the OCR engines (whose model entry wraps that
same engine) and the registry of background jobs.
"""

from __future__ import annotations

import sys
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable

from core.jobs.registry import JobRegistry, registry
from core.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover - typing only
    from core.app.clips import ClipService
    from core.app.documents import DocumentService
    from core.app.speech import SpeechService
    from core.app.video import VideoService
    from core.cache import CacheBackend
    from core.vlm import Engine


class Runtime:
    """Settings, the result cache, the one engine, the OCR engines and the jobs of this process."""

    def __init__(self, settings: Settings, cache: "CacheBackend | None" = None, engine: "Engine | None" = None,
                 jobs: JobRegistry | None = None) -> None:
        self.settings = settings
        self._cache = cache
        self._engine = engine
        self._owns_cache = cache is None
        self._owns_engine = engine is None
        self.jobs = jobs if jobs is not None else registry()
        self._lock = threading.Lock()

    @classmethod
    def build(cls, settings: Settings | None = None, **kwargs: Any) -> "Runtime":
        """A runtime from the given settings (default: `load_settings()`, which raises SettingsError)."""
        return cls(settings if settings is not None else load_settings(), **kwargs)

    @property
    def cache(self) -> "CacheBackend":
        """The result cache, opened on first use (SettingsError / CacheUnavailable when it cannot be)."""
        with self._lock:
            if self._cache is None:
                from core.cache import open_cache

                self._cache = open_cache(self.settings)
            return self._cache

    @property
    def engine(self) -> "Engine":
        """The one model engine of this process (its weights load on its first request). A local engine keeps
        videos' visual features in the result cache (encode once, ask forever: any process, after a restart)."""
        with self._lock:
            made = self._engine is None
            if made:
                from core.vlm import create_engine

                self._engine = create_engine(self.settings)
            engine = self._engine
        if made and hasattr(engine, "set_feature_store"):  # outside the lock: `cache` takes it too
            from core.errors import UserError

            try:
                engine.set_feature_store(self.cache)
            except UserError as exc:  # no cache (e.g. Redis down): the engine works, features are not kept
                import logging

                logging.getLogger(__name__).warning("visual features will not be kept: %s", exc)
        return engine

    @property
    def engine_made(self) -> bool:
        """True once the engine object exists (it may still not have loaded its weights)."""
        return self._engine is not None

    @cached_property
    def ocr(self) -> Any:
        """The OCR engines of this process; the model entry (`vlm`) wraps `self.engine`."""
        from core.ocr.registry import OcrRegistry

        return OcrRegistry(self.settings, model_engine=lambda: self.engine)

    @cached_property
    def video(self) -> "VideoService":
        """Video workflows: probe, plan, analyse, ask, summarise."""
        from core.app.video import VideoService

        return VideoService(self)

    @cached_property
    def clips(self) -> "ClipService":
        """Clips: stretches of videos as video files, contact sheets and highlights."""
        from core.app.clips import ClipService

        return ClipService(self)

    @property
    def speech(self) -> "SpeechService":
        """Speech: timed transcripts of videos and audio files (one service, and its engines, per runtime)."""
        from core.app.speech import speech

        return speech(self)

    @cached_property
    def documents(self) -> "DocumentService":
        """Document workflows: read (OCR), ask."""
        from core.app.documents import DocumentService

        return DocumentService(self)

    def with_cache(self, wrap: "Callable[[CacheBackend], CacheBackend]") -> "Runtime":
        """A runtime sharing these settings and jobs whose cache is `wrap(self.cache)` (e.g. a batch's cache that
        keeps results while a Redis server is down); closing it closes the wrapped cache."""
        wrapped = Runtime(self.settings, cache=wrap(self.cache), engine=self._engine, jobs=self.jobs)
        wrapped._owns_cache = True
        return wrapped

    def close(self) -> None:
        """Close what this runtime opened itself (a cache or engine given to it stays open)."""
        speech_module = sys.modules.get("core.app.speech")  # loaded only once speech was used
        if speech_module is not None:
            with speech_module._SERVICES_LOCK:
                speech = speech_module._SERVICES.pop(self, None)
            if speech is not None:
                speech.close()  # the speech models this runtime loaded
        with self._lock:
            if self._owns_engine and self._engine is not None:
                self._engine.close()
                self._engine = None
            if self._owns_cache and self._cache is not None:
                self._cache.close()
                self._cache = None

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
