"""The remote engine: Qwen3-VL served by an OpenAI-compatible chat API (vLLM, SGLang, `transformers serve`).

How visual inputs travel
------------------------
Images go as `image_url` parts holding a base64 data URI (PNG, lossless, so OCR-like questions
lose nothing). A video goes as its frames, each sent as an image (JPEG data URI) and **preceded by
a text part `<t seconds>` holding that frame's real time in the source file** (frame index /
source fps). This is the portable way that keeps times correct on any server: vLLM accepts a
video as a list of frames plus metadata only in some versions and with its own field names, other
servers ignore such metadata and then assume a default frame rate, which shifts every time the
model names. Written-out times are read by Qwen3-VL exactly like the `<t seconds>` texts its own
video processor inserts, so answers such as "at 12.5 seconds" refer to the source file's clock.
(`RemoteEngine.build_request` returns the body that is sent, so callers and tests can see it.)

HTTP: `httpx2` (the HTTP client huggingface_hub already depends on; same API as httpx). Connection
errors, timeouts while connecting and 5xx answers are retried with exponential backoff; 4xx
answers are not (the request itself is wrong). The API key from settings (`remote_api_key`, a
pydantic SecretStr) is sent as a Bearer header only; it never appears in logs, errors or reprs.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
from typing import Any, Iterator

from core.settings import Settings
from core.vlm.base import (
    Engine,
    EngineError,
    EngineInfo,
    InvalidRequest,
    Ledger,
    ModelUnavailable,
    OutOfMemory,
    RequestRecord,
    TextStream,
)
from core.vlm.types import (
    GenerationParams,
    GenerationResult,
    ImagePart,
    Message,
    Metrics,
    TextPart,
    VideoPart,
    to_rgb_array,
)

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({500, 502, 503, 504})
_EXTENSION_FIELDS = ("top_k", "repetition_penalty")


class RemoteModelUnavailable(ModelUnavailable):
    """The server cannot be reached, or does not serve the configured model."""

    def __init__(self, model: str, reason: str, fix: str) -> None:
        self.model = model
        self.reason = reason
        EngineError.__init__(self, f"Remote model {model or '(first served)'!r} is not available: {reason}. {fix}")


def time_text(seconds: float) -> str:
    """The `<t seconds>` text Qwen3-VL reads before a frame (one decimal, like its video processor)."""
    return f"<{seconds:.1f} seconds>"


def _data_uri(image: Any, fmt: str = "PNG", max_pixels: int | None = None) -> str:
    from PIL import Image

    try:
        arr = to_rgb_array(image)
    except ValueError as exc:
        raise InvalidRequest(f"cannot send this image: {exc}") from exc
    im = Image.fromarray(arr)
    if max_pixels and im.width * im.height > max_pixels:
        scale = (max_pixels / (im.width * im.height)) ** 0.5
        im = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, "JPEG", quality=90)
        mime = "image/jpeg"
    else:
        im.save(buf, "PNG")
        mime = "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def video_parts(video: VideoPart) -> list[dict[str, Any]]:
    """A video as OpenAI content parts: `<t seconds>` text, then the frame as an image, for every frame.

    The time is the frame's real time in the source (frame index / source fps), so the model's
    answers use the source file's clock whatever frame rate the frames were sampled at.
    """
    per_frame = None
    if video.max_pixels_total:
        per_frame = max(1, video.max_pixels_total // len(video.frames))
    out: list[dict[str, Any]] = []
    for frame, t in zip(video.frames, video.timestamps):
        out.append({"type": "text", "text": time_text(t)})
        out.append({"type": "image_url", "image_url": {"url": _data_uri(frame, "JPEG", per_frame)}})
    return out


class RemoteEngine(Engine):
    """The `Engine` interface over an OpenAI-compatible chat-completions server.

    `settings.remote_url` is the API base (e.g. http://gpu-box:8000/v1), `remote_model` the served
    model name (empty: the first the server lists), `remote_api_key` an optional Bearer token and
    `remote_timeout_s` the read timeout of one request. `transport` (an httpx2 transport) and the
    retry knobs are for tests and special set-ups.
    """

    def __init__(self, settings: Settings, *, transport: Any = None, retries: int = 3, backoff_s: float = 0.5,
                 connect_timeout_s: float = 10.0) -> None:
        import httpx2

        self.settings = settings
        self.ledger = Ledger()
        self.base_url = settings.remote_url.rstrip("/")
        self.retries = max(0, int(retries))
        self.backoff_s = backoff_s
        self._send_extensions = True
        self._model: str | None = None
        self._lock = threading.Lock()
        headers = {"Accept": "application/json"}
        key = settings.remote_api_key
        self._secret = key.get_secret_value() if key is not None else ""
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        timeout = httpx2.Timeout(settings.remote_timeout_s, connect=min(connect_timeout_s, settings.remote_timeout_s))
        self._client = httpx2.Client(headers=headers, timeout=timeout, transport=transport)
        self.last_request: dict[str, Any] | None = None
        """The body of the latest chat request (images as data URIs), for inspection."""

    def __repr__(self) -> str:
        return (f"RemoteEngine(url={self.base_url!r}, model={self.settings.remote_model or '(first served)'!r}, "
                f"api_key={'set' if self._secret else 'unset'})")

    # -- HTTP with retries ------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _unreachable(self, exc: Exception, tries: int) -> RemoteModelUnavailable:
        return RemoteModelUnavailable(
            self.settings.remote_model,
            f"the server at {self.base_url} cannot be reached ({type(exc).__name__} after {tries} tries)",
            "Start the server (e.g. `vllm serve Qwen/Qwen3-VL-4B-Instruct`) or point VLSCOPE_REMOTE_URL "
            "(setting `remote_url`) at it, e.g. http://HOST:8000/v1.",
        )

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None, stream: bool = False) -> Any:
        """Send one request, retrying connection errors and 5xx with backoff; returns the response.

        The caller closes a streamed response. 4xx answers are returned as they are (not retried).
        """
        import httpx2

        url = self.base_url + path
        attempt = 0
        while True:
            attempt += 1
            try:
                request = self._client.build_request(method, url, json=body)
                response = self._client.send(request, stream=stream)
            except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.RemoteProtocolError, httpx2.ReadError,
                    httpx2.WriteError, httpx2.PoolTimeout) as exc:
                if attempt > self.retries:
                    raise self._unreachable(exc, attempt) from None
                log.warning("remote engine: %s %s failed (%s), retry %d of %d", method, path, type(exc).__name__,
                            attempt, self.retries)
            except httpx2.TimeoutException as exc:
                raise EngineError(
                    f"The server at {self.base_url} did not answer within {self.settings.remote_timeout_s:g} s "
                    f"({type(exc).__name__}). Raise VLSCOPE_REMOTE_TIMEOUT_S or ask for less (fewer frames, "
                    "shorter answers)."
                ) from None
            else:
                if response.status_code not in _RETRY_STATUS or attempt > self.retries:
                    return response
                log.warning("remote engine: %s %s answered HTTP %d, retry %d of %d", method, path,
                            response.status_code, attempt, self.retries)
                response.close()
            time.sleep(self.backoff_s * (2 ** (attempt - 1)))

    def _error_detail(self, response: Any) -> str:
        try:
            if not response.is_stream_consumed:
                response.read()
            data = response.json()
            detail = data.get("detail") or data.get("error") or data.get("message") or data
            if isinstance(detail, dict):
                detail = detail.get("message") or json.dumps(detail)
            text = str(detail)
        except Exception:  # noqa: BLE001 - any unreadable body
            text = (response.text if response.is_stream_consumed else "")[:500]
        return self._redact(text.strip())[:500]

    def _raise_for(self, response: Any, model: str) -> None:
        code = response.status_code
        if code < 400:
            return
        detail = self._error_detail(response)
        response.close()
        low = detail.lower()
        if code in (401, 403):
            raise EngineError(
                f"The server at {self.base_url} refused the request (HTTP {code}: {detail}). Set the right API key "
                "in VLSCOPE_REMOTE_API_KEY (setting `remote_api_key`)."
            )
        if code == 404 or (code in (400, 422) and "model" in low and any(
                w in low for w in ("not found", "does not exist", "pinned", "not served", "unknown model"))):
            raise RemoteModelUnavailable(model, f"the server at {self.base_url} answered HTTP {code}: {detail}",
                                         "Set VLSCOPE_REMOTE_MODEL to one of the models the server lists (or empty).")
        if "out of memory" in low:
            raise OutOfMemory(f"on the server: {detail}")
        if code == 413 or "context length" in low or "too long" in low or ("maximum" in low and "token" in low):
            raise InvalidRequest(
                f"The request is too large for the server (HTTP {code}: {detail}). Send fewer frames or smaller "
                "images, or start the server with a larger --max-model-len."
            )
        if code < 500:
            raise InvalidRequest(f"The server at {self.base_url} rejected the request (HTTP {code}: {detail}).")
        raise EngineError(
            f"The server at {self.base_url} failed (HTTP {code}: {detail}) after {self.retries + 1} tries. "
            "Check the server's log."
        )

    # -- models -----------------------------------------------------------------------------

    def models(self) -> list[str]:
        """The model names the server serves (GET /models)."""
        response = self._send("GET", "/models")
        self._raise_for(response, self.settings.remote_model)
        try:
            data = response.json()
            return [str(m["id"]) for m in data.get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EngineError(f"The server at {self.base_url} is not an OpenAI-compatible API: /models answered "
                              f"{type(exc).__name__}. Check VLSCOPE_REMOTE_URL (it usually ends in /v1).") from None

    def model_name(self) -> str:
        """The model requests go to: the configured one if the server serves it, else the first served."""
        with self._lock:
            if self._model is not None:
                return self._model
        served = self.models()
        wanted = self.settings.remote_model
        if wanted:
            if wanted not in served:
                raise RemoteModelUnavailable(
                    wanted, f"the server at {self.base_url} serves {served or 'no model'}",
                    "Set VLSCOPE_REMOTE_MODEL (setting `remote_model`) to one of those, or leave it empty for the "
                    "first, or start the server with this model.",
                )
            name = wanted
        elif served:
            name = served[0]
        else:
            raise RemoteModelUnavailable("", f"the server at {self.base_url} lists no model",
                                         "Start the server with a model (e.g. `vllm serve Qwen/Qwen3-VL-4B-Instruct`).")
        with self._lock:
            self._model = name
        return name

    def info(self) -> EngineInfo:
        """The served model and whether the server answers; never raises for an unreachable server."""
        try:
            name = self.model_name()
        except EngineError as exc:
            return EngineInfo(backend="remote", model=self.settings.remote_model, loaded=False, device=self.base_url,
                              error=self._redact(str(exc)))
        return EngineInfo(backend="remote", model=name, loaded=True, device=self.base_url)

    # -- requests ---------------------------------------------------------------------------

    def build_messages(self, messages: list[Message]) -> list[dict[str, Any]]:
        """Messages in OpenAI chat format: text parts, images as data URIs, videos as timed frames."""
        if not messages:
            raise InvalidRequest("no messages to answer")
        out: list[dict[str, Any]] = []
        for message in messages:
            if isinstance(message.content, str):
                out.append({"role": message.role, "content": message.content})
                continue
            parts: list[dict[str, Any]] = []
            for part in message.parts():
                if isinstance(part, TextPart):
                    parts.append({"type": "text", "text": part.text})
                elif isinstance(part, ImagePart):
                    parts.append({"type": "image_url", "image_url": {"url": _data_uri(part.image)}})
                elif isinstance(part, VideoPart):
                    parts.extend(video_parts(part))
                else:
                    raise InvalidRequest(f"unsupported message part {type(part).__name__}")
            out.append({"role": message.role, "content": parts})
        return out

    def build_request(self, messages: list[Message], params: GenerationParams | None = None,
                      model: str | None = None, stream: bool = True) -> dict[str, Any]:
        """The JSON body of the chat-completions request for these messages and parameters."""
        params = params or GenerationParams(max_new_tokens=self.settings.max_new_tokens)
        body: dict[str, Any] = {
            "model": model if model is not None else (self.settings.remote_model or ""),
            "messages": self.build_messages(messages),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if not params.greedy:
            body["top_p"] = params.top_p
            if self._send_extensions:  # vLLM / SGLang sampling extensions
                body["top_k"] = params.top_k
                body["repetition_penalty"] = params.repetition_penalty
        if params.presence_penalty:
            body["presence_penalty"] = params.presence_penalty
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    def stream(self, messages: list[Message], params: GenerationParams | None = None, kind: str = "chat") -> TextStream:
        """Send the request (retrying until the server answers) and stream the answer's text chunks."""
        params = params or GenerationParams(max_new_tokens=self.settings.max_new_tokens)
        t0 = time.perf_counter()
        record = RequestRecord(started_at=time.time(), kind=kind, model=self.settings.remote_model, status="running")
        try:
            model = self.model_name()
            record.model = model
            body = self.build_request(messages, params, model=model)
            t1 = time.perf_counter()
            self.last_request = body
            response = self._send("POST", "/chat/completions", body, stream=True)
            if response.status_code in (400, 422) and self._send_extensions and any(
                    f in body for f in _EXTENSION_FIELDS):
                detail = self._error_detail(response)
                if any(f in detail for f in _EXTENSION_FIELDS):
                    response.close()
                    self._send_extensions = False  # this server knows only OpenAI's own fields
                    for f in _EXTENSION_FIELDS:
                        body.pop(f, None)
                    response = self._send("POST", "/chat/completions", body, stream=True)
            self._raise_for(response, model)
        except EngineError as exc:
            record.status, record.error = "error", self._redact(str(exc))
            record.total_ms = (time.perf_counter() - t0) * 1000
            self.ledger.add(record)
            raise

        state: dict[str, Any] = {"text": [], "finish": None, "usage": None, "first": None, "chunks": 0,
                                 "error": None, "cancelled": False, "end": None}

        def chunks() -> Iterator[str]:
            import httpx2

            try:
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        event = json.loads(data)
                    except json.JSONDecodeError:
                        continue
                    if event.get("error"):
                        err = event["error"]
                        raise EngineError(f"The server failed while answering: "
                                          f"{self._redact(str(err.get('message', err) if isinstance(err, dict) else err))}")
                    if event.get("usage"):
                        state["usage"] = event["usage"]
                    for choice in event.get("choices") or []:
                        if choice.get("finish_reason"):
                            state["finish"] = choice["finish_reason"]
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            if state["first"] is None:
                                state["first"] = time.perf_counter()
                            state["chunks"] += 1
                            state["text"].append(piece)
                            yield piece
            except httpx2.TimeoutException:
                state["error"] = EngineError(
                    f"The server at {self.base_url} stopped sending the answer for {self.settings.remote_timeout_s:g} s. "
                    "Raise VLSCOPE_REMOTE_TIMEOUT_S or ask for less.")
            except httpx2.TransportError as exc:
                if not state["cancelled"]:
                    state["error"] = EngineError(f"The connection to {self.base_url} broke while answering "
                                                 f"({type(exc).__name__}).")
            except EngineError as exc:
                state["error"] = exc
            finally:
                state["end"] = time.perf_counter()
                response.close()

        def cancel() -> None:
            state["cancelled"] = True
            response.close()

        def finish() -> GenerationResult:
            t_end = state["end"] or time.perf_counter()
            usage = state["usage"] or {}
            completion = int(usage.get("completion_tokens") or state["chunks"])
            prompt = int(usage.get("prompt_tokens") or 0)
            metrics = Metrics(preprocess_ms=(t1 - t0) * 1000, total_ms=(t_end - t0) * 1000, decode_path="remote")
            if state["first"] is not None:
                metrics.ttft_ms = (state["first"] - t0) * 1000
                metrics.prefill_ms = (state["first"] - t1) * 1000
                metrics.decode_ms = (t_end - state["first"]) * 1000
                if completion > 1 and metrics.decode_ms > 0:
                    metrics.decode_tokens_per_s = (completion - 1) / (metrics.decode_ms / 1000)
            record.prompt_tokens, record.completion_tokens = prompt, completion
            for name in ("preprocess_ms", "prefill_ms", "ttft_ms", "total_ms", "decode_tokens_per_s"):
                setattr(record, name, getattr(metrics, name))
            if state["error"] is not None:
                record.status, record.error = "error", str(state["error"])
                self.ledger.add(record)
                raise state["error"]
            if state["cancelled"] and state["finish"] is None:
                reason = "cancelled"
            else:
                reason = "length" if state["finish"] == "length" else "stop"
            record.status = reason
            self.ledger.add(record)
            return GenerationResult(text="".join(state["text"]), prompt_tokens=prompt, completion_tokens=completion,
                                    finish_reason=reason, metrics=metrics, model=model)

        return TextStream(chunks(), cancel, finish)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

