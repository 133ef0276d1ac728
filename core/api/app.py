"""The FastAPI application behind `vlscope serve`.

Every endpoint uses the same result cache as the dashboard and the CLI (`open_cache(settings)`),
so a video analysed here opens instantly in the dashboard and vice versa. Uploads are streamed to
a temporary file (never held whole in memory) and refused with 413 above `max_upload_mb`.
User-caused problems become 4xx answers with a message naming the cause and the fix (never an
internal path: the upload is named as the client named it); a missing model is a 503 carrying the
engine's explanation, and so is a server busy with other heavy work (with `Retry-After`).

With `auth_file` set, every endpoint but /health and the API's description (/openapi.json, /docs,
/redoc: they hold no data) wants `Authorization: Bearer TOKEN`, a token of the users file (re-read
when it changes); the work of a request is done as its user (`core.auth.current_user()`).
Work runs in a thread while the connection is watched: when the client leaves, the work is asked
to stop (video analysis, OCR and video questions stop soon after).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, TypeVar

import anyio
from fastapi import FastAPI, File, Form, HTTPException, Path as PathParam, Query, Request, UploadFile
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel

from core.app.video import is_video
from core.errors import Busy, UserError
from core.settings import Settings, load_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

SHA256 = r"^[0-9a-f]{64}$"
STAGE = r"^[A-Za-z0-9._-]{1,64}$"
CHUNK = 1024 * 1024
UPLOAD_PREFIX = "vlscope-upload-"
STALE_UPLOAD_S = 600.0  # upload folders of dead processes older than this are removed at start
POLL_S = 0.25  # how often a running request checks that its client is still there
RETRY_AFTER_S = 60  # what a busy server tells clients to wait (the Busy message says "in a minute")
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
_TEMP_PATH = re.compile(r"[^\s'\"()]*" + UPLOAD_PREFIX + r"[^\s'\"()]*")
NO_TOKEN = ("This API needs sign-in: send the header `Authorization: Bearer TOKEN`. Ask the server's "
            "administrator for a token (made with `vlscope users token NAME`).")
BAD_TOKEN = ("The bearer token was not accepted (unknown, revoked or mistyped). Ask the server's administrator "
             "for a new token (made with `vlscope users token NAME`) and send it as `Authorization: Bearer TOKEN`.")


class ErrorDetail(BaseModel):
    """Why a request was refused: the cause and what to do about it."""

    detail: str


_ERROR_TEXT = {
    400: "The input or a parameter cannot be used; the message names the cause and the fix.",
    401: "No valid bearer token; send `Authorization: Bearer TOKEN` (tokens: `vlscope users token NAME`).",
    404: "Nothing is stored for this input or stage.",
    413: "The upload is larger than `max_upload_mb`.",
    503: "The model is not available, or the server is busy with other heavy work (then try again after "
         "`Retry-After` seconds); the message says which.",
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI descriptions of the error answers `codes` (each `{"detail": str}`)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorDetail, "description": _ERROR_TEXT[code]}
        if code == 503:
            out[code]["headers"] = {"Retry-After": {"description": "seconds to wait before trying again (busy)",
                                                    "schema": {"type": "integer"}}}
    return out


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


class _UsersFile:
    """The API's users file, re-read when it changes (mtime, size, inode) so new tokens work without a restart.

    A file that becomes unreadable (a half-written edit, removed) keeps the users last read; that is logged.
    """

    def __init__(self, path: Path) -> None:
        from core.auth import load_users

        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._users = load_users(self.path)  # at start a bad file is an AuthError naming the fix

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def user_for(self, token: str) -> str | None:
        """The user `token` belongs to (None: no such token)."""
        from core.auth import AuthError, load_users, user_for_token

        stamp = self._stat()
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._users = load_users(self.path)
                    log.info("users file %s re-read: %d user(s)", self.path, len(self._users))
                except AuthError as exc:
                    log.warning("kept the users read before: %s", exc)
            users = self._users
        return user_for_token(users, token)


def _bearer(scope: dict) -> str:
    for key, value in scope.get("headers") or []:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


class _Auth:
    """ASGI middleware: a bearer token of the users file on every path but PUBLIC_PATHS (401 otherwise);
    the rest of the request runs as the token's user (`core.auth.acting_as`)."""

    def __init__(self, app: Any, users: _UsersFile) -> None:
        self.app = app
        self.users = users

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        from core.auth import acting_as

        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        token = _bearer(scope)
        name = self.users.user_for(token) if token else None
        if name is None:
            challenge = 'Bearer realm="VLScope"' + (', error="invalid_token"' if token else "")
            response = JSONResponse({"detail": BAD_TOKEN if token else NO_TOKEN}, status_code=401,
                                    headers={"WWW-Authenticate": challenge})
            return await response(scope, receive, send)
        with acting_as(name):
            await self.app(scope, receive, send)


@dataclass
class WorkCounts:
    """The API's work threads now, and the requests whose client left before the answer (work asked to stop)."""

    running: int = 0
    abandoned: int = 0


class ClientLeft(Exception):
    """The client closed the connection; its work was cancelled."""


@dataclass(frozen=True)
class Upload:
    """An upload saved to a temporary file: where it is, its sha256 and the name the client gave it."""

    path: Path
    sha256: str
    name: str


def _upload_name(upload: UploadFile) -> str:
    return Path(upload.filename or "upload").name or "upload"


def clean_message(message: str, upload: Upload | None = None) -> str:
    """`message` with the upload's temporary path replaced by the client's file name (no internal path shown)."""
    if upload is not None:
        for internal in {str(upload.path), str(upload.path.resolve())}:
            message = message.replace(internal, upload.name)
        message = _TEMP_PATH.sub(lambda _: upload.name, message)
        # the temporary copy named by its file name alone ("upload.mp4 has no audio track")
        bare = re.compile(r"(?<![\w.-])" + re.escape(upload.path.name) + r"(?![\w.-])")
        message = bare.sub(lambda _: upload.name, message)
        if upload.name not in message:
            message = f"{upload.name}: {message}"
    return _TEMP_PATH.sub("the uploaded file", message)


def _http_error(exc: BaseException, upload: Upload | None = None) -> HTTPException | None:
    """The answer for a user-caused error (None: not one, a defect)."""
    from core.media.errors import VideoError
    from core.ocr.types import OcrError
    from core.vlm.base import EngineError, InvalidRequest

    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, Busy):
        return HTTPException(503, clean_message(str(exc), upload), headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, EngineError) and not isinstance(exc, InvalidRequest):
        return HTTPException(503, clean_message(str(exc), upload))  # no model, out of memory, remote server down
    if isinstance(exc, (UserError, VideoError, OcrError, InvalidRequest)):
        return HTTPException(400, clean_message(str(exc), upload))
    return None


@contextmanager
def user_errors(upload: Upload | None = None) -> Iterator[None]:
    """Turn user-caused errors raised in the block into their HTTP answers (messages naming the upload)."""
    try:
        yield
    except Exception as exc:
        answer = _http_error(exc, upload)
        if answer is None or answer is exc:
            raise
        raise answer from None


@contextmanager
def saved_upload(upload: UploadFile, limit_mb: int) -> Iterator[Upload]:
    """Copy an upload to a temporary folder in chunks (bounded memory), removed afterwards.

    The folder is named after this process (`vlscope-upload-<pid>-...`) so a later start can tell
    the folders of a crashed process (`clean_stale_uploads`) from those of a running one.
    """
    import hashlib

    name = _upload_name(upload)
    suffix = Path(name).suffix.lower()[:12]
    folder = tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-")
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
        yield Upload(path, digest.hexdigest(), name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_uploads(folder: str | os.PathLike[str] | None = None, min_age_s: float = STALE_UPLOAD_S) -> list[Path]:
    """Remove upload folders left by crashed API processes; returns those removed.

    Removed: `vlscope-upload-*` folders of the temporary folder owned by this user, untouched for
    `min_age_s`, whose process (the pid in the name) is gone; folders of an older VLScope without a
    pid in the name are removed once untouched for `min_age_s` too. Never: another user's, or a
    running process's.
    """
    base = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(UPLOAD_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.getuid() or now - st.st_mtime < min_age_s:
                continue
        except OSError:
            continue
        pid_text = entry.name[len(UPLOAD_PREFIX):].partition("-")[0]
        if pid_text.isdigit() and "-" in entry.name[len(UPLOAD_PREFIX):] and _alive(int(pid_text)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    if removed:
        log.info("removed %d upload folder(s) left by stopped API processes in %s", len(removed), base)
    return removed


def create_app(settings: Settings | None = None, cache: Any = None, engine: Any = None) -> FastAPI:
    """The API app over one `Runtime` (core/app): `cache` defaults to the dashboard's cache, `engine` to the
    one engine made on the first question. With `settings.auth_file` set, bearer tokens of that users file
    are required (an unreadable file is an AuthError here)."""
    from core.app import Runtime
    from core.cache import CacheKey
    from core.media.errors import Cancelled
    from core.vlm.base import EngineError

    settings = settings or load_settings()
    users = _UsersFile(settings.auth_file) if settings.auth_file is not None else None
    runtime = Runtime(settings, cache=cache, engine=engine)
    counts = WorkCounts()
    counts_lock = threading.Lock()

    def get_cache() -> Any:
        return runtime.cache

    def get_engine() -> Any:
        return runtime.engine

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        clean_stale_uploads()
        yield
        runtime.close()  # what the runtime opened itself (a cache or engine given to create_app stays open)

    app = FastAPI(
        title="VLScope API",
        version="0.1.0",
        description="OCR, video analysis and questions about images, PDFs and videos with Qwen3-VL; results are "
        "cached by the input's sha256 and shared with the VLScope dashboard."
        + (" Every endpoint but /health wants `Authorization: Bearer TOKEN` (tokens: `vlscope users token NAME`)."
           if users is not None else ""),
        lifespan=lifespan,
    )
    app.state.work = counts
    app.state.runtime = runtime
    app.add_middleware(_LimitBody, limit_mb=settings.max_upload_mb)
    if users is not None:
        app.add_middleware(_Auth, users=users)  # outermost: nothing is read before the token is checked
    limit = settings.max_upload_mb
    signed = (401,) if users is not None else ()

    async def run_work(request: Request, what: str, work: Callable[[threading.Event], T]) -> T:
        """Run `work(cancel)` in a thread; when the client leaves meanwhile, set `cancel` (ClientLeft if it stops)."""
        cancel = threading.Event()

        def tracked() -> T:
            with counts_lock:
                counts.running += 1
            try:
                return work(cancel)
            finally:
                with counts_lock:
                    counts.running -= 1

        task = asyncio.ensure_future(anyio.to_thread.run_sync(tracked))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=POLL_S)
                if not task.done() and not cancel.is_set() and await request.is_disconnected():
                    cancel.set()
                    with counts_lock:
                        counts.abandoned += 1
                    log.info("the client left before the answer: stopping %s", what)
            return task.result()
        except asyncio.CancelledError:
            cancel.set()
            raise
        except Cancelled:
            if cancel.is_set():
                log.info("stopped %s: its client had left", what)
                raise ClientLeft(what) from None
            raise

    @app.exception_handler(UploadTooLarge)
    async def _too_large(_: Request, exc: UploadTooLarge) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=413)

    @app.exception_handler(UserError)
    async def _user_error(_: Request, exc: UserError) -> JSONResponse:
        answer = _http_error(exc)
        assert answer is not None
        return JSONResponse({"detail": answer.detail}, status_code=answer.status_code, headers=answer.headers)

    @app.exception_handler(ClientLeft)
    async def _client_left(_: Request, exc: ClientLeft) -> JSONResponse:
        # nobody reads this (nginx's "client closed request"); it keeps the access log truthful
        return JSONResponse({"detail": f"The client left; {exc} was cancelled."}, status_code=499)

    @app.get("/health", summary="Liveness check")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info", summary="Engine, cache, limits and who is signed in", responses=_responses(*signed))
    def info() -> dict[str, Any]:
        from core.auth import current_user

        try:
            engine_info = get_engine().info().to_dict()
        except EngineError as exc:
            engine_info = {"loaded": False, "error": str(exc)}
        stats = get_cache().stats()
        return {"engine": engine_info, "cache": stats.to_dict(), "max_upload_mb": limit,
                "engine_kind": settings.engine, "user": current_user()}

    @app.post("/ocr", summary="Read text, tables and invoice fields from an uploaded image or PDF",
              responses=_responses(400, *signed, 413, 503))
    async def ocr(
        request: Request,
        file: UploadFile = File(..., description="PDF or image (PNG, JPEG, TIFF, WebP, BMP)"),
        engine_name: Literal["auto", "rapidocr", "tesseract", "vlm"] = Query("auto", alias="engine"),
        lang: str | None = Query(None, max_length=16, pattern=r"^[A-Za-z-]+$",
                                 description="language hint: en, de, fr, zh, zh-tw, ja, ar, fa, hi, sa"),
        pages: str | None = Query(None, max_length=200, pattern=r"^[0-9,\- ]+$", description="1-based, e.g. 1-3,5"),
        dpi: int = Query(200, ge=30, le=600),
        enhanced: bool = Query(False),
        fields: Literal["auto", "on", "off"] = Query("auto"),
    ) -> dict[str, Any]:
        from core.ocr.pipeline import OcrOptions

        def work(cancel: threading.Event) -> dict[str, Any]:
            with saved_upload(file, limit) as upload, user_errors(upload):
                options = OcrOptions(engine=engine_name, lang=lang, pages=pages, dpi=dpi, enhanced=enhanced,
                                     fields=fields)
                result = runtime.documents.read(upload.path, options, name=upload.name, cancel=cancel)
            return result.to_dict()

        return await run_work(request, f"OCR of {_upload_name(file)}", work)

    @app.post("/video/analyze", summary="Scene cuts, motion and on-screen text events of an uploaded video",
              responses=_responses(400, *signed, 413, 503))
    async def analyze(
        request: Request,
        file: UploadFile = File(..., description="a video file (MP4, MOV, MKV, WebM, AVI...)"),
        stages: str = Query("scenes,motion", max_length=100, pattern=r"^[a-z, ]+$",
                            description="comma-separated stages: scenes, motion, text"),
    ) -> dict[str, Any]:
        wanted = [s.strip() for s in stages.split(",") if s.strip()]
        if not wanted:
            raise HTTPException(400, "No stage asked for; choose from scenes, motion, text.")

        def work(cancel: threading.Event) -> dict[str, Any]:
            with saved_upload(file, limit) as upload, user_errors(upload):
                result = runtime.video.analyse(upload.path, tuple(wanted), input_hash=upload.sha256, cancel=cancel)
            data = result.to_dict()
            data.pop("path", None)  # a temporary file, gone after the request
            return data

        return await run_work(request, f"the analysis of {_upload_name(file)}", work)

    @app.post("/ask", summary="Ask a question about an uploaded image, PDF or video (needs the model)",
              responses=_responses(400, *signed, 413, 503))
    async def ask(
        request: Request,
        file: UploadFile = File(..., description="an image, a PDF or a video"),
        question: str = Form(..., min_length=1, max_length=4000),
        pages: str | None = Form("1", max_length=200, pattern=r"^[0-9,\- ]+$",
                                 description="PDF pages to look at, 1-based"),
        max_new_tokens: int = Form(512, ge=1, le=8192),
    ) -> dict[str, Any]:
        from core.vlm.types import GenerationParams

        params = GenerationParams(max_new_tokens=max_new_tokens)
        name = _upload_name(file)
        video_upload = is_video(name) or (file.content_type or "").startswith("video/")

        def work(cancel: threading.Event) -> dict[str, Any]:
            with saved_upload(file, limit) as upload, user_errors(upload):
                if video_upload:
                    qa = runtime.video.questions(upload.path, input_hash=upload.sha256)
                    chunks = runtime.video.stream_ask(qa, question, params)
                    try:
                        for _ in chunks:
                            if cancel.is_set():
                                raise Cancelled("the question was cancelled")
                    finally:
                        chunks.close()  # stops the generation when cancelled
                    assert qa.last_result is not None
                    runtime.video.save_answer(upload.sha256, qa.source.plan, question, qa.last_result)
                    return {"kind": "video", "input_hash": upload.sha256, **qa.last_result.to_dict()}
                from core.analysis.documents import load_pages

                for _ in load_pages(upload.path, pages, max_pixels=settings.max_image_pixels, settings=settings):
                    break  # check the file is readable before waking the model
                if cancel.is_set():
                    raise Cancelled("the question was cancelled")
                answer = runtime.documents.ask(upload.path, question, pages=pages, params=params)
                return {"kind": "document", "input_hash": upload.sha256, **answer.to_dict()}

        return await run_work(request, f"the question about {name}", work)

    @app.post("/video/clip", summary="A stretch of an uploaded video as a video file or a contact sheet, or highlights "
              "joining several stretches", responses=_responses(400, *signed, 413))
    async def clip(
        request: Request,
        file: UploadFile = File(..., description="a video file (MP4, MOV, MKV, WebM, AVI...)"),
        start: str | None = Query(None, max_length=20, description="start of the stretch, e.g. 3:15 or 195.5"),
        end: str | None = Query(None, max_length=20, description="end of the stretch, e.g. 3:40"),
        highlights: str | None = Query(None, max_length=2000, description="stretches to join, e.g. 0:10-0:20,1:00-1:05"),
        output: Literal["clip", "sheet"] = Query("clip", description="the video file, or a contact sheet (JPEG)"),
        method: Literal["auto", "copy", "re-encode"] = Query("auto"),
        tiles: int = Query(12, ge=1, le=100, description="frames on a contact sheet"),
    ) -> FileResponse:
        from core.app.clips import api_clip

        def work(cancel: threading.Event) -> Any:
            with saved_upload(file, limit) as upload, user_errors(upload):
                return api_clip(runtime, upload.path, upload.sha256, upload.name, start=start, end=end,
                                highlights=highlights, output=output, method=method, tiles=tiles, cancel=cancel)

        made = await run_work(request, f"the clip of {_upload_name(file)}", work)
        return FileResponse(made.path, media_type=made.media_type, filename=made.name, headers=made.headers())

    @app.post("/video/transcript", summary="What is said in an uploaded video or audio file, with times: the "
              "transcript as JSON, SubRip (SRT), WebVTT or plain text", responses=_responses(400, *signed, 413, 503))
    async def transcript(
        request: Request,
        file: UploadFile = File(..., description="a video with sound or an audio file (MP4, MKV, WebM, WAV, MP3...)"),
        format_field: Literal["json", "srt", "vtt", "txt"] | None = Form(
            None, alias="format", description="json (segments, words, language, engine), srt, vtt or txt"),
        format_query: Literal["json", "srt", "vtt", "txt"] | None = Query(
            None, alias="format", description="the same as the form field `format` (the form field wins)"),
        engine_name: Literal["auto", "whisper", "qwen3_asr", "pocketsphinx"] = Form(
            "auto", alias="engine", description="auto: the speech model when its weights are here, else PocketSphinx"),
        language: str | None = Form(None, max_length=16, pattern=r"^[A-Za-z-]+$",
                                    description="the language spoken (e.g. en) to skip detection"),
    ) -> Any:
        from fastapi.responses import Response

        from core.app.speech import better_model_note, speech
        from core.speech.errors import SpeechEngineUnavailable
        from core.speech.exports import MEDIA_TYPES, SUFFIXES, export

        fmt = format_field or format_query or "json"
        service = speech(runtime)

        def work(cancel: threading.Event) -> tuple[Any, str]:
            with saved_upload(file, limit) as upload, user_errors(upload):
                try:
                    heard = service.transcribe(upload.path, engine=engine_name, input_hash=upload.sha256,
                                               language=language, cancel=cancel)
                except SpeechEngineUnavailable as exc:  # no speech model here: like a missing vision model
                    raise HTTPException(503, clean_message(str(exc), upload)) from None
                return heard, upload.name

        heard, name = await run_work(request, f"the transcript of {_upload_name(file)}", work)
        headers = {"X-VLScope-Engine": heard.engine, "X-VLScope-Segments": str(len(heard.segments))}
        if fmt == "json":
            note = better_model_note(heard, settings)
            return JSONResponse({**heard.to_dict(), **({"better_model": note} if note else {})}, headers=headers)
        stem = Path(name).stem or "transcript"
        headers["Content-Disposition"] = f'attachment; filename="{_ascii_name(stem)}{SUFFIXES[fmt]}"'
        return Response(export(heard, fmt), media_type=f"{MEDIA_TYPES[fmt]}; charset=utf-8", headers=headers)

    @app.get("/results/{sha256}", summary="The cached results of one input (by the sha256 of its bytes)",
             responses=_responses(*signed, 404))
    def results(sha256: str = PathParam(..., pattern=SHA256)) -> dict[str, Any]:
        entries = get_cache().entries(sha256)
        if not entries:
            raise HTTPException(404, f"No cached result for input {sha256}; analyse the file first (POST /ocr, "
                                     "/video/analyze) or check the hash (sha256 of the file's bytes).")
        return {"input_hash": sha256, "entries": [
            {"stage": e.stage, "key": e.key, "size_bytes": e.size_bytes, "stored_at": e.stored_at} for e in entries]}

    @app.get("/results/{sha256}/{stage}", summary="The stored JSON of one stage of one input",
             responses=_responses(*signed, 404))
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

    if users is not None:
        _document_bearer(app)
    return app


def _ascii_name(stem: str) -> str:
    """A file name safe inside a Content-Disposition header (ASCII letters, digits, ._- ; the rest as _)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:100] or "transcript"


def _document_bearer(app: FastAPI) -> None:
    """Describe the bearer token in the OpenAPI spec (so /docs offers "Authorize") on every path but /health."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            spec.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http", "scheme": "bearer",
                "description": "an API token of the users file (`vlscope users token NAME`)"}
            for path, operations in spec.get("paths", {}).items():
                if path not in PUBLIC_PATHS:
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Run the API with uvicorn until interrupted; AuthError (before listening) beyond localhost with no sign-in."""
    import uvicorn

    from core.auth import check_listen

    settings = settings or load_settings()
    check_listen(settings, host, "API", for_api=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
