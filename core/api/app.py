"""The FastAPI application behind `vlscope serve`.

Every endpoint uses the same result cache as the dashboard and the CLI (`open_cache(settings)`),
so a video analysed here opens instantly in the dashboard and vice versa. Uploads are streamed to
a temporary file (never held whole in memory) and refused with 413 above `max_upload_mb`.
User-caused problems become 4xx answers with a message naming the cause and the fix; a missing
model is a 503 carrying the engine's explanation. The OpenAPI spec is at /openapi.json, the
interactive docs at /docs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

from fastapi import FastAPI, File, Form, HTTPException, Path as PathParam, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from core.settings import Settings, load_settings

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp"}
SHA256 = r"^[0-9a-f]{64}$"
STAGE = r"^[A-Za-z0-9._-]{1,64}$"
CHUNK = 1024 * 1024


class UploadTooLarge(HTTPException):
    def __init__(self, limit_mb: int) -> None:
        super().__init__(413, f"The upload is larger than the limit of {limit_mb} MiB. Send a smaller file, or raise "
                              "the limit with VLSCOPE_MAX_UPLOAD_MB (setting `max_upload_mb`).")


class _LimitBody:
    """ASGI middleware: 413 before reading a body whose Content-Length is above the limit, and a
    413 as soon as a body without one (chunked) grows past it."""

    def __init__(self, app: Any, limit_mb: int) -> None:
        self.app = app
        self.limit_mb = limit_mb
        self.limit = limit_mb * 1024 * 1024

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            err = UploadTooLarge(self.limit_mb)
            return await JSONResponse({"detail": err.detail}, status_code=413)(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise UploadTooLarge(self.limit_mb)
            return message

        return await self.app(scope, counted, send)


def _error(status: int, exc: BaseException) -> HTTPException:
    return HTTPException(status, str(exc))


@contextmanager
def saved_upload(upload: UploadFile, limit_mb: int) -> Iterator[tuple[Path, str]]:
    """Copy an upload to a temporary file in chunks (bounded memory); yields (path, sha256)."""
    import hashlib

    name = Path(upload.filename or "upload").name
    suffix = Path(name).suffix.lower()[:12]
    folder = tempfile.mkdtemp(prefix="vlscope-upload-")
    path = Path(folder) / f"upload{suffix}"
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "wb") as out:
            while chunk := upload.file.read(CHUNK):
                size += len(chunk)
                if size > limit_mb * 1024 * 1024:
                    raise UploadTooLarge(limit_mb)
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise HTTPException(400, f"The uploaded file {name!r} is empty; send the file's bytes.")
        yield path, digest.hexdigest()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def create_app(settings: Settings | None = None, cache: Any = None, engine: Any = None) -> FastAPI:
    """The API app. `cache` defaults to the dashboard's cache (`open_cache(settings)`), `engine` to
    `create_engine(settings)` made on the first question."""
    from core.cache import CacheKey, open_cache
    from core.media.errors import VideoError
    from core.ocr.types import OcrError
    from core.vlm.base import EngineError, InvalidRequest

    settings = settings or load_settings()
    owns_cache = cache is None
    state: dict[str, Any] = {"cache": cache, "engine": engine}
    engine_lock = threading.Lock()

    def get_cache() -> Any:
        if state["cache"] is None:
            state["cache"] = open_cache(settings)
        return state["cache"]

    def get_engine() -> Any:
        with engine_lock:
            if state["engine"] is None:
                from core.vlm import create_engine

                state["engine"] = create_engine(settings)
            return state["engine"]

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if owns_cache and state["cache"] is not None:
            state["cache"].close()
        if engine is None and state["engine"] is not None:
            state["engine"].close()

    app = FastAPI(
        title="VLScope API",
        version="0.1.0",
        description="OCR, video analysis and questions about images, PDFs and videos with Qwen3-VL; results are "
        "cached by the input's sha256 and shared with the VLScope dashboard.",
        lifespan=lifespan,
    )
    app.add_middleware(_LimitBody, limit_mb=settings.max_upload_mb)
    limit = settings.max_upload_mb

    @app.exception_handler(UploadTooLarge)
    async def _too_large(_: Request, exc: UploadTooLarge) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=413)

    @app.get("/health", summary="Liveness check")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info", summary="Engine, cache and limits")
    def info() -> dict[str, Any]:
        try:
            engine_info = get_engine().info().to_dict()
        except EngineError as exc:
            engine_info = {"loaded": False, "error": str(exc)}
        stats = get_cache().stats()
        return {"engine": engine_info, "cache": stats.to_dict(), "max_upload_mb": limit,
                "engine_kind": settings.engine}

    @app.post("/ocr", summary="Read text, tables and invoice fields from an uploaded image or PDF")
    def ocr(
        file: UploadFile = File(..., description="PDF or image (PNG, JPEG, TIFF, WebP, BMP)"),
        engine_name: Literal["auto", "rapidocr", "tesseract", "vlm"] = Query("auto", alias="engine"),
        lang: str | None = Query(None, max_length=16, pattern=r"^[A-Za-z-]+$",
                                 description="language hint: en, de, fr, zh, zh-tw, ja, ar, fa, hi, sa"),
        pages: str | None = Query(None, max_length=200, pattern=r"^[0-9,\- ]+$", description="1-based, e.g. 1-3,5"),
        dpi: int = Query(200, ge=30, le=600),
        enhanced: bool = Query(False),
        fields: Literal["auto", "on", "off"] = Query("auto"),
    ) -> dict[str, Any]:
        from core.ocr.pipeline import OcrOptions, run_ocr

        with saved_upload(file, limit) as (path, _):
            try:
                options = OcrOptions(engine=engine_name, lang=lang, pages=pages, dpi=dpi, enhanced=enhanced,
                                     fields=fields)
                result = run_ocr(path, options, name=Path(file.filename or "upload").name, settings=settings,
                                 cache=get_cache())
            except OcrError as exc:
                raise _error(400, exc) from None
            except EngineError as exc:  # the `vlm` OCR engine without a model
                raise _error(400 if isinstance(exc, InvalidRequest) else 503, exc) from None
        return result.to_dict()

    @app.post("/video/analyze", summary="Scene cuts, motion and on-screen text events of an uploaded video")
    def analyze(
        file: UploadFile = File(..., description="a video file (MP4, MOV, MKV, WebM, AVI...)"),
        stages: str = Query("scenes,motion", max_length=100, pattern=r"^[a-z, ]+$",
                            description="comma-separated stages: scenes, motion, text"),
    ) -> dict[str, Any]:
        from core.analysis.video_pipeline import analyze_video

        wanted = [s.strip() for s in stages.split(",") if s.strip()]
        if not wanted:
            raise HTTPException(400, "No stage asked for; choose from scenes, motion, text.")
        with saved_upload(file, limit) as (path, digest):
            try:
                result = analyze_video(path, wanted, cache=get_cache(), input_hash=digest)
            except VideoError as exc:
                raise _error(400, exc) from None
        data = result.to_dict()
        data.pop("path", None)  # a temporary file, gone after the request
        return data

    @app.post("/ask", summary="Ask a question about an uploaded image, PDF or video (needs the model)")
    def ask(
        file: UploadFile = File(..., description="an image, a PDF or a video"),
        question: str = Form(..., min_length=1, max_length=4000),
        pages: str | None = Form("1", max_length=200, pattern=r"^[0-9,\- ]+$",
                                 description="PDF pages to look at, 1-based"),
        max_new_tokens: int = Form(512, ge=1, le=8192),
    ) -> dict[str, Any]:
        from core.vlm.types import GenerationParams

        params = GenerationParams(max_new_tokens=max_new_tokens)
        name = Path(file.filename or "upload").name
        is_video = Path(name).suffix.lower() in VIDEO_SUFFIXES or (file.content_type or "").startswith("video/")
        with saved_upload(file, limit) as (path, digest):
            try:
                if is_video:
                    from core.analysis.qa import VideoQA
                    from core.analysis.sources import MediaFrameSource

                    source = MediaFrameSource(path, input_hash=digest)
                    answer = VideoQA(get_engine(), source).ask(question, params)
                    return {"kind": "video", "input_hash": digest, **answer.to_dict()}
                from core.analysis.documents import load_pages, ask_document

                for _ in load_pages(path, pages, max_pixels=settings.max_image_pixels):
                    break  # check the file is readable before waking the model
                answer = ask_document(get_engine(), path, question, pages=pages, params=params, settings=settings)
                return {"kind": "document", "input_hash": digest, **answer.to_dict()}
            except (VideoError, OcrError, InvalidRequest) as exc:
                raise _error(400, exc) from None
            except EngineError as exc:  # no model, out of memory, remote server down
                raise _error(503, exc) from None

    @app.get("/results/{sha256}", summary="The cached results of one input (by the sha256 of its bytes)")
    def results(sha256: str = PathParam(..., pattern=SHA256)) -> dict[str, Any]:
        entries = get_cache().entries(sha256)
        if not entries:
            raise HTTPException(404, f"No cached result for input {sha256}; analyse the file first (POST /ocr, "
                                     "/video/analyze) or check the hash (sha256 of the file's bytes).")
        return {"input_hash": sha256, "entries": [
            {"stage": e.stage, "key": e.key, "size_bytes": e.size_bytes, "stored_at": e.stored_at} for e in entries]}

    @app.get("/results/{sha256}/{stage}", summary="The stored JSON of one stage of one input")
    def result(sha256: str = PathParam(..., pattern=SHA256), stage: str = PathParam(..., pattern=STAGE)) -> dict:
        cache = get_cache()
        found = [e for e in cache.entries(sha256) if e.stage == stage]
        if not found:
            stages = sorted({e.stage for e in cache.entries(sha256)})
            raise HTTPException(404, f"No cached {stage!r} result for input {sha256}"
                                + (f"; stored stages: {', '.join(stages)}." if stages else "."))
        values = []
        for e in found:
            key = CacheKey.parse(e.key)
            value = cache.get_json(key) if key is not None else None
            if value is not None:
                values.append({"key": e.key, "stored_at": e.stored_at, "value": value})
        if not values:
            raise HTTPException(404, f"The {stage!r} entries of {sha256} are binary or no longer readable.")
        return {"input_hash": sha256, "stage": stage, "results": values}

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Run the API with uvicorn until interrupted."""
    import uvicorn

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
