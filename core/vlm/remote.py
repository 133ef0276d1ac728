"""The remote engine: Qwen3-VL served by an OpenAI-compatible chat API (vLLM, SGLang, `transformers serve`).

Images and videos travel as `core.vlm.chatformat` writes them: images as data URIs, a video as its
frames, each preceded by a `<t seconds>` text holding its real time in the source file.
(`RemoteEngine.build_request` returns the body that is sent, so callers and tests can see it.)

HTTP: the official `openai` client (over httpx2). It retries connection errors, timeouts while
connecting and 5xx answers (also 408, 409 and 429) `retries` times with exponential backoff from
`backoff_s`; other 4xx answers are not retried (the request itself is wrong), nor is a server that
takes longer than `remote_timeout_s` to answer. Its typed errors become VLScope's EngineError,
ModelUnavailable, InvalidRequest and OutOfMemory with the cause and the fix. The API key from
settings (`remote_api_key`, a pydantic SecretStr) is sent as a Bearer header only (none without a
key); it never appears in logs, errors or reprs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Iterator

import httpx2
import openai

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
from core.vlm.chatformat import chat_messages, data_uri, time_text, video_parts
from core.vlm.types import GenerationParams, GenerationResult, Message, Metrics

__all__ = ["RemoteEngine", "RemoteModelUnavailable", "chat_messages", "data_uri", "time_text", "video_parts"]

log = logging.getLogger(__name__)

_EXTENSION_FIELDS = ("top_k", "repetition_penalty")
_NO_KEY = "vlscope-no-key"  # the client wants a key; this one is not sent (`_Transport`)


class RemoteModelUnavailable(ModelUnavailable):
    """The server cannot be reached, or does not serve the configured model."""

    def __init__(self, model: str, reason: str, fix: str) -> None:
        self.model = model
        self.reason = reason
        EngineError.__init__(self, f"Remote model {model or '(first served)'!r} is not available: {reason}. {fix}")


class _Transport(httpx2.BaseTransport):
    """What the openai client sends, as VLScope wants it: no Authorization header without a key (the client insists
    on one, `_NO_KEY`), and a read or write timeout raised as openai's APITimeoutError, which the client raises at
    once instead of retrying: a server that is slow to answer is not asked the same question again."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.headers.get("Authorization") == f"Bearer {_NO_KEY}":
            del request.headers["Authorization"]
        try:
            return self.inner.handle_request(request)
        except (httpx2.ReadTimeout, httpx2.WriteTimeout) as exc:
            raise openai.APITimeoutError(request=request) from exc

    def close(self) -> None:
        self.inner.close()


class _Client(openai.OpenAI):
    """The openai client with VLScope's backoff: `backoff_s`, then twice as long at each retry (no jitter)."""

    backoff_s = 0.5

    @property
    def user_agent(self) -> str:
        return f"OpenAI/Python {openai.__version__}"  # what the official client says, not this subclass's name

    def _calculate_retry_timeout(self, remaining_retries: int, options: Any, response_headers: Any = None) -> float:
        max_retries = options.get_max_retries(self.max_retries)
        taken = max_retries - remaining_retries
        delay = self.backoff_s * 2 ** taken
        log.warning("remote engine: no answer yet from %s, retry %d of %d in %.2f s", self.base_url, taken + 1,
                    max_retries, delay)
        return delay


class RemoteEngine(Engine):
    """The `Engine` interface over an OpenAI-compatible chat-completions server.

    `settings.remote_url` is the API base (e.g. http://gpu-box:8000/v1), `remote_model` the served
    model name (empty: the first the server lists), `remote_api_key` an optional Bearer token and
    `remote_timeout_s` the read timeout of one request. `transport` (an httpx2 transport) and the
    retry knobs are for tests and special set-ups.
    """

    def __init__(self, settings: Settings, *, transport: httpx2.BaseTransport | None = None, retries: int = 3,
                 backoff_s: float = 0.5, connect_timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.ledger = Ledger()
        self.base_url = settings.remote_url.rstrip("/")
        self.retries = max(0, int(retries))
        self.backoff_s = backoff_s
        self._send_extensions = True
        self._model: str | None = None
        self._lock = threading.Lock()
        key = settings.remote_api_key
        self._secret = key.get_secret_value() if key is not None else ""
        timeout = httpx2.Timeout(settings.remote_timeout_s, connect=min(connect_timeout_s, settings.remote_timeout_s))
        http = openai.DefaultHttpxClient(transport=_Transport(transport or httpx2.HTTPTransport()), timeout=timeout)
        self._client = _Client(api_key=self._secret or _NO_KEY, base_url=self.base_url, max_retries=self.retries,
                               timeout=timeout, http_client=http)
        self._client.backoff_s = backoff_s
        self.last_request: dict[str, Any] | None = None
        """The body of the latest chat request (images as data URIs), for inspection."""

    def __repr__(self) -> str:
        return (f"RemoteEngine(url={self.base_url!r}, model={self.settings.remote_model or '(first served)'!r}, "
                f"api_key={'set' if self._secret else 'unset'})")

    # -- errors -----------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _unreachable(self, cause: BaseException) -> RemoteModelUnavailable:
        return RemoteModelUnavailable(
            self.settings.remote_model,
            f"the server at {self.base_url} cannot be reached ({type(cause).__name__} after {self.retries + 1} tries)",
            "Start the server (e.g. `vllm serve Qwen/Qwen3-VL-4B-Instruct`) or point VLSCOPE_REMOTE_URL "
            "(setting `remote_url`) at it, e.g. http://HOST:8000/v1.",
        )

    def _detail(self, response: Any) -> str:
        """The server's own words from an error answer: its detail / error / message field, or its text."""
        try:
            data = response.json()
            detail = data.get("detail") or data.get("error") or data.get("message") or data
            if isinstance(detail, dict):
                detail = detail.get("message") or json.dumps(detail)
            text = str(detail)
        except Exception:  # noqa: BLE001 - any unreadable body
            try:
                text = response.text[:500]
            except Exception:  # noqa: BLE001 - a body that was never read
                text = ""
        return self._redact(text.strip())[:500]

    def _error(self, exc: openai.OpenAIError, model: str) -> EngineError:
        """The engine error, with cause and fix, for an error of the openai client."""
        if isinstance(exc, openai.APITimeoutError):
            cause = exc.__cause__ or exc
            if isinstance(cause, (httpx2.ConnectTimeout, httpx2.PoolTimeout)):
                return self._unreachable(cause)
            return EngineError(
                f"The server at {self.base_url} did not answer within {self.settings.remote_timeout_s:g} s "
                f"({type(cause).__name__}). Raise VLSCOPE_REMOTE_TIMEOUT_S or ask for less (fewer frames, "
                "shorter answers)."
            )
        if isinstance(exc, openai.APIConnectionError):
            return self._unreachable(exc.__cause__ or exc)
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc.status_code, self._detail(exc.response), model)
        return EngineError(f"The server at {self.base_url} answered what this client cannot read "
                           f"({type(exc).__name__}: {self._redact(str(exc))[:300]}). Check VLSCOPE_REMOTE_URL "
                           "(it usually ends in /v1).")

    def _status_error(self, code: int, detail: str, model: str) -> EngineError:
        low = detail.lower()
        if code in (401, 403):
            return EngineError(
                f"The server at {self.base_url} refused the request (HTTP {code}: {detail}). Set the right API key "
                "in VLSCOPE_REMOTE_API_KEY (setting `remote_api_key`)."
            )
        if code == 404 or (code in (400, 422) and "model" in low and any(
                w in low for w in ("not found", "does not exist", "pinned", "not served", "unknown model"))):
            return RemoteModelUnavailable(model, f"the server at {self.base_url} answered HTTP {code}: {detail}",
                                          "Set VLSCOPE_REMOTE_MODEL to one of the models the server lists (or empty).")
        if "out of memory" in low:
            return OutOfMemory(f"on the server: {detail}")
        if code == 413 or "context length" in low or "too long" in low or ("maximum" in low and "token" in low):
            return InvalidRequest(
                f"The request is too large for the server (HTTP {code}: {detail}). Send fewer frames or smaller "
                "images, or start the server with a larger --max-model-len."
            )
        if code < 500:
            return InvalidRequest(f"The server at {self.base_url} rejected the request (HTTP {code}: {detail}).")
        return EngineError(
            f"The server at {self.base_url} failed (HTTP {code}: {detail}) after {self.retries + 1} tries. "
            "Check the server's log."
        )

    # -- models -----------------------------------------------------------------------------

    def models(self) -> list[str]:
        """The model names the server serves (GET /models)."""
        try:
            page = self._client.models.list()
            return [str(m.id) for m in page.data]
        except (openai.APIResponseValidationError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EngineError(f"The server at {self.base_url} is not an OpenAI-compatible API: /models answered "
                              f"{type(exc).__name__}. Check VLSCOPE_REMOTE_URL (it usually ends in /v1).") from None
        except openai.OpenAIError as exc:
            raise self._error(exc, self.settings.remote_model) from None

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
        return chat_messages(messages)

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

    def _create(self, body: dict[str, Any]) -> Any:
        """Send a chat request; the vLLM / SGLang sampling extensions go as extra body fields."""
        fields = {k: v for k, v in body.items() if k not in _EXTENSION_FIELDS}
        extra = {k: body[k] for k in _EXTENSION_FIELDS if k in body}
        return self._client.chat.completions.create(**fields, extra_body=extra or None)

    def _open(self, body: dict[str, Any]) -> Any:
        """The streamed answer to `body`; a server that refuses the sampling extensions is asked again without."""
        try:
            return self._create(body)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            if not (self._send_extensions and any(f in body for f in _EXTENSION_FIELDS)
                    and any(f in self._detail(exc.response) for f in _EXTENSION_FIELDS)):
                raise
        self._send_extensions = False  # this server knows only OpenAI's own fields
        for f in _EXTENSION_FIELDS:
            body.pop(f, None)
        return self._create(body)

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
            try:
                answer = self._open(body)
            except openai.OpenAIError as exc:
                raise self._error(exc, model) from None
        except EngineError as exc:
            record.status, record.error = "error", self._redact(str(exc))
            record.total_ms = (time.perf_counter() - t0) * 1000
            self.ledger.add(record)
            raise

        state: dict[str, Any] = {"text": [], "finish": None, "usage": None, "first": None, "chunks": 0,
                                 "error": None, "cancelled": False, "end": None}

        def chunks() -> Iterator[str]:
            try:
                for event in answer:
                    usage = getattr(event, "usage", None)
                    if usage:
                        state["usage"] = {"prompt_tokens": getattr(usage, "prompt_tokens", 0),
                                          "completion_tokens": getattr(usage, "completion_tokens", 0)}
                    for choice in getattr(event, "choices", None) or []:
                        if getattr(choice, "finish_reason", None):
                            state["finish"] = choice.finish_reason
                        piece = getattr(getattr(choice, "delta", None), "content", None)
                        if piece:
                            if state["first"] is None:
                                state["first"] = time.perf_counter()
                            state["chunks"] += 1
                            state["text"].append(piece)
                            yield piece
            except (openai.APITimeoutError, httpx2.TimeoutException):
                state["error"] = EngineError(
                    f"The server at {self.base_url} stopped sending the answer for {self.settings.remote_timeout_s:g} s. "
                    "Raise VLSCOPE_REMOTE_TIMEOUT_S or ask for less.")
            except (openai.APIConnectionError, httpx2.TransportError) as exc:
                if not state["cancelled"]:
                    cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) and exc.__cause__ else exc
                    state["error"] = EngineError(f"The connection to {self.base_url} broke while answering "
                                                 f"({type(cause).__name__}).")
            except openai.APIError as exc:  # an error event in the stream
                err = exc.body
                text = err.get("message", err) if isinstance(err, dict) else (err or exc.message)
                state["error"] = EngineError(f"The server failed while answering: {self._redact(str(text))}")
            finally:
                state["end"] = time.perf_counter()
                answer.close()

        def cancel() -> None:
            state["cancelled"] = True
            answer.close()

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
