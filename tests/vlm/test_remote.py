"""RemoteEngine against a real OpenAI-compatible server: `transformers serve` with the tiny model on the CPU.

Retries, 4xx and the API key are also checked against a small local HTTP stub (127.0.0.1 only),
because a real server cannot be told to fail on purpose.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.settings import Settings
from core.vlm import GenerationParams, ImagePart, InvalidRequest, ModelUnavailable, TextPart, VideoPart, create_engine, user
from core.vlm.base import EngineError
from core.vlm.remote import RemoteEngine

SECRET = "sk-test-7f3a9c-DO-NOT-LEAK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """`transformers serve` on a free loopback port, serving the tiny model on the CPU; stopped afterwards."""
    import httpx2

    port = free_port()
    cli = Path(sys.executable).with_name("transformers")
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([str(cli), "serve", str(tiny_model_dir), "--device", "cpu", "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not become healthy in 120 s: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", str(tiny_model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def engine(served, tmp_path_factory):
    url, _ = served
    eng = create_engine(Settings(engine="remote", remote_url=url, cache_dir=tmp_path_factory.mktemp("c")))
    yield eng
    eng.close()


def picture() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((64, 96, 3), np.uint8)
    img[:, :48] = (220, 40, 40)
    img[:, 48:] = rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)
    return img


def test_models_list_and_info(engine, served):
    _, model = served
    assert isinstance(engine, RemoteEngine)
    assert engine.models() == [model]
    info = engine.info()
    assert (info.backend, info.model, info.loaded, info.error) == ("remote", model, True, None)


def test_model_not_served_is_a_clear_model_unavailable(served):
    url, model = served
    eng = RemoteEngine(Settings(engine="remote", remote_url=url, remote_model="Qwen/Qwen3-VL-4B-Instruct"))
    with pytest.raises(ModelUnavailable) as err:
        eng.generate([user("hi")], GenerationParams.greedy_defaults(2))
    assert "Qwen/Qwen3-VL-4B-Instruct" in str(err.value) and model in str(err.value)
    assert "VLSCOPE_REMOTE_MODEL" in str(err.value)
    assert eng.info().loaded is False


def test_image_question_answers_with_metrics_and_ledger(engine, served):
    _, model = served
    result = engine.generate([user(ImagePart(picture()), "What colour is the left half?")],
                             GenerationParams.greedy_defaults(6), kind="image-qa")
    body = engine.last_request
    parts = body["messages"][0]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": "What colour is the left half?"}
    assert result.text and result.model == model
    assert result.completion_tokens == 6 and result.finish_reason == "length"
    assert result.prompt_tokens > 10  # the image's tokens count on the server
    m = result.metrics
    assert 0 < m.ttft_ms <= m.total_ms and m.decode_tokens_per_s and m.decode_tokens_per_s > 0
    rec = engine.ledger.records()[-1]
    assert (rec.kind, rec.status, rec.model, rec.completion_tokens) == ("image-qa", "length", model, 6)


def test_streamed_chunks_equal_the_final_text(engine, served):
    import httpx2

    url, model = served
    messages = [user(ImagePart(picture()), "Describe it.")]
    with engine.stream(messages, GenerationParams.greedy_defaults(8)) as s:
        chunks = list(s)
    assert len(chunks) > 1
    assert "".join(chunks) == s.result.text
    # the server's own non-streamed answer to the same greedy request is the same text
    # (transformers serve echoes the prompt as a first streamed chunk, hence endswith)
    plain = engine.build_request(messages, GenerationParams.greedy_defaults(8), model=model, stream=False)
    answer = httpx2.post(url + "/chat/completions", json=plain, timeout=60).json()["choices"][0]["message"]["content"]
    assert answer and s.result.text.endswith(answer)


def test_video_frames_carry_their_source_times(engine):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    # frames 250, 275, 300, 325 of a 25 fps file: 10, 11, 12 and 13 s into the source
    video = VideoPart(frames=frames, frame_indices=[250, 275, 300, 325], source_fps=25.0)
    result = engine.generate([user(video, "When does it change?")], GenerationParams.greedy_defaults(4))
    parts = engine.last_request["messages"][0]["content"]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    assert texts == ["<10.0 seconds>", "<11.0 seconds>", "<12.0 seconds>", "<13.0 seconds>", "When does it change?"]
    kinds = [p["type"] for p in parts]
    assert kinds == ["text", "image_url"] * 4 + ["text"]  # each time right before its frame
    assert all(p["image_url"]["url"].startswith("data:image/jpeg;base64,") for p in parts if p["type"] == "image_url")
    assert result.completion_tokens == 4 and result.prompt_tokens > 4 * 4  # the server saw four images


def test_max_new_tokens_is_respected(engine):
    for n in (1, 3):
        result = engine.generate([user("Count to ten.")], GenerationParams.greedy_defaults(n))
        assert result.completion_tokens == n and result.finish_reason == "length"


def test_sampling_extensions_are_dropped_for_a_server_that_refuses_them(engine):
    # transformers serve answers 422 to vLLM's top_k / repetition_penalty: the engine retries without them
    result = engine.generate([user("Hello")], GenerationParams(max_new_tokens=2, seed=1))
    assert result.completion_tokens == 2
    assert "top_k" not in engine.last_request and engine.last_request["temperature"] == 0.7


# ---------- failures: a local stub server (127.0.0.1) that fails on purpose -----------------------


class Stub:
    """A tiny OpenAI-like server: answers /models after `fail_first` 503s; records requests."""

    def __init__(self, port: int = 0, fail_first: int = 0, status: int | None = None, body: str = "") -> None:
        self.requests: list[tuple[str, Any]] = []  # (path, headers: looked up case-insensitively, as HTTP says)
        self.fail_first, self.status, self.body = fail_first, status, body
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _answer(self, code: int, payload: str, ctype: str = "application/json") -> None:
                data = payload.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                stub.requests.append((self.path, self.headers))
                if len(stub.requests) <= stub.fail_first:
                    return self._answer(503, '{"detail": "warming up"}')
                if stub.status:
                    return self._answer(stub.status, stub.body)
                self._answer(200, json.dumps({"object": "list", "data": [{"id": "stub-model", "object": "model"}]}))

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.do_GET()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_retries_5xx_with_backoff_then_succeeds():
    stub = Stub(fail_first=2)
    try:
        eng = RemoteEngine(Settings(engine="remote", remote_url=stub.url), retries=3, backoff_s=0.05)
        t0 = time.monotonic()
        assert eng.models() == ["stub-model"]
        assert len(stub.requests) == 3
        assert time.monotonic() - t0 >= 0.05 + 0.1  # backed off 0.05 s then 0.1 s
    finally:
        stub.stop()


def test_server_down_then_up_is_retried():
    port = free_port()
    holder: list[Stub] = []
    threading.Timer(0.4, lambda: holder.append(Stub(port=port))).start()
    eng = RemoteEngine(Settings(engine="remote", remote_url=f"http://127.0.0.1:{port}/v1"), retries=5, backoff_s=0.2)
    try:
        assert eng.info().model == "stub-model"
    finally:
        time.sleep(0.5)
        for s in holder:
            s.stop()


def test_4xx_is_not_retried():
    stub = Stub(status=400, body='{"detail": "bad request shape"}')
    try:
        eng = RemoteEngine(Settings(engine="remote", remote_url=stub.url), retries=3, backoff_s=0.05)
        with pytest.raises(InvalidRequest, match="bad request shape"):
            eng.models()
        assert len(stub.requests) == 1
    finally:
        stub.stop()


def test_api_key_is_sent_but_never_shown(caplog):
    caplog.set_level(logging.DEBUG)
    # a server that echoes the key back in its error body must not get it into our message
    stub = Stub(fail_first=1, status=401, body=json.dumps({"detail": f"invalid key {SECRET}"}))
    settings = Settings(engine="remote", remote_url=stub.url, remote_api_key=SECRET)
    try:
        eng = RemoteEngine(settings, retries=2, backoff_s=0.01)
        with pytest.raises(EngineError) as err:
            eng.generate([user("hi")], GenerationParams.greedy_defaults(2))
        assert stub.requests[0][1]["Authorization"] == f"Bearer {SECRET}"
        message = str(err.value)
        assert "HTTP 401" in message and "VLSCOPE_REMOTE_API_KEY" in message
        shown = [message, repr(eng), repr(settings), str(settings), settings.model_dump_json(), caplog.text,
                 eng.info().error or "", json.dumps([r.to_dict() for r in eng.ledger.records()])]
        assert all(SECRET not in text for text in shown)
        assert "api_key=set" in repr(eng)
    finally:
        stub.stop()
    # unreachable server: the error names the URL and the fix, not the key
    eng = RemoteEngine(Settings(engine="remote", remote_url=stub.url, remote_api_key=SECRET), retries=0)
    with pytest.raises(ModelUnavailable) as err:
        eng.models()
    assert SECRET not in str(err.value)


def test_unreachable_server_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    eng = RemoteEngine(Settings(engine="remote", remote_url=url), retries=1, backoff_s=0.01)
    with pytest.raises(ModelUnavailable) as err:
        eng.generate([user(TextPart("hi"))], GenerationParams.greedy_defaults(2))
    message = str(err.value)
    assert url in message and "cannot be reached" in message and "VLSCOPE_REMOTE_URL" in message
    info = eng.info()
    assert info.loaded is False and "cannot be reached" in info.error
    assert eng.ledger.records()[0].status == "error"
