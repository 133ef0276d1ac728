"""RemoteEngine over the openai client, against a scripted OpenAI-like server on 127.0.0.1: what users see when
the server is slow, fails mid-answer, keeps failing, or is asked without a key."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

from core.settings import Settings
from core.vlm import GenerationParams, InvalidRequest, user
from core.vlm.base import EngineError
from core.vlm.remote import RemoteEngine

MODELS = json.dumps({"object": "list", "data": [{"id": "stub-model", "object": "model"}]})


def chunk(text: str | None = None, finish: str | None = None, usage: dict | None = None) -> str:
    """One `data:` line of a streamed chat completion."""
    event: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "stub-model",
                             "choices": [] if text is None and finish is None else
                             [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}
    if usage:
        event["usage"] = usage
    return "data: " + json.dumps(event) + "\n\n"


class Server:
    """Answers GET /models with one model and POST /chat/completions with `chat(handler)`; records requests."""

    def __init__(self, chat: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, headers)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def answer(self, code: int, payload: str, ctype: str = "application/json") -> None:
                data = payload.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                server.requests.append(("GET", self.path, self.headers))
                self.answer(200, MODELS)

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests.append(("POST", self.path, self.headers))
                chat(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def posts(self) -> int:
        return sum(1 for method, _, _ in self.requests if method == "POST")

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers: list[Server] = []

    def start(chat: Callable[[BaseHTTPRequestHandler], None]) -> Server:
        servers.append(Server(chat))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def stream_body(handler: BaseHTTPRequestHandler, lines: list[str]) -> None:
    data = "".join(lines).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def test_a_streamed_answer_with_usage_and_no_key_sends_no_authorization(serve) -> None:
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    server = serve(lambda h: stream_body(h, [chunk("The door"), chunk(" opens"), chunk("."), chunk(finish="length"),
                                             chunk(usage=usage), "data: [DONE]\n\n"]))
    eng = RemoteEngine(Settings(engine="remote", remote_url=server.url), retries=0)
    with eng.stream([user("What happens?")], GenerationParams.greedy_defaults(3)) as s:
        pieces = list(s)
    assert pieces == ["The door", " opens", "."]
    result = s.result
    assert (result.text, result.prompt_tokens, result.completion_tokens, result.finish_reason, result.model) == (
        "The door opens.", 11, 3, "length", "stub-model")
    assert all(headers["Authorization"] is None for _, _, headers in server.requests)  # no key: no header at all
    assert eng.ledger.records()[-1].status == "length"


def test_a_server_slower_than_the_timeout_is_not_asked_twice(serve) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(1.5)
        stream_body(handler, [chunk("late"), "data: [DONE]\n\n"])

    server = serve(slow)
    eng = RemoteEngine(Settings(engine="remote", remote_url=server.url, remote_timeout_s=0.4), retries=3,
                       backoff_s=0.01)
    t0 = time.monotonic()
    with pytest.raises(EngineError) as err:
        eng.generate([user("hi")], GenerationParams.greedy_defaults(2))
    assert time.monotonic() - t0 < 1.4  # one timeout, not four
    assert str(err.value).startswith(f"The server at {server.url} did not answer within 0.4 s (ReadTimeout).")
    assert "VLSCOPE_REMOTE_TIMEOUT_S" in str(err.value)
    assert server.posts() == 1
    assert eng.ledger.records()[-1].status == "error"


def test_an_error_event_in_the_stream_ends_the_answer_with_the_servers_words(serve) -> None:
    error = "data: " + json.dumps({"error": {"message": "CUDA error: device-side assert", "code": 500}}) + "\n\n"
    server = serve(lambda h: stream_body(h, [chunk("Half an"), error]))
    eng = RemoteEngine(Settings(engine="remote", remote_url=server.url), retries=0)
    stream = eng.stream([user("hi")], GenerationParams.greedy_defaults(5))
    assert next(stream) == "Half an"
    with pytest.raises(EngineError, match="^The server failed while answering: CUDA error: device-side assert$"):
        next(stream)
    rec = eng.ledger.records()[-1]
    assert rec.status == "error" and rec.error == "The server failed while answering: CUDA error: device-side assert"


def test_a_server_that_keeps_failing_is_tried_retries_plus_one_times(serve) -> None:
    server = serve(lambda h: h.answer(503, json.dumps({"detail": "engine overloaded"})))
    eng = RemoteEngine(Settings(engine="remote", remote_url=server.url), retries=2, backoff_s=0.01)
    with pytest.raises(EngineError) as err:
        eng.generate([user("hi")], GenerationParams.greedy_defaults(2))
    assert str(err.value) == (f"The server at {server.url} failed (HTTP 503: engine overloaded) after 3 tries. "
                              "Check the server's log.")
    assert server.posts() == 3


def test_a_prompt_longer_than_the_servers_context_is_an_invalid_request(serve) -> None:
    detail = "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens."
    server = serve(lambda h: h.answer(400, json.dumps({"object": "error", "message": detail})))
    eng = RemoteEngine(Settings(engine="remote", remote_url=server.url), retries=3, backoff_s=0.01)
    with pytest.raises(InvalidRequest) as err:
        eng.generate([user("hi")], GenerationParams.greedy_defaults(2))
    assert str(err.value).startswith(f"The request is too large for the server (HTTP 400: {detail}).")
    assert "--max-model-len" in str(err.value)
    assert server.posts() == 1  # not retried
