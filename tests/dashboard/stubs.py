"""A small HTTP server on 127.0.0.1 for the dashboard's break tests: an OpenAI-compatible /v1 whose answers
stream the text it is given (so a test can make "the model" answer with a Markdown image), and /pixel.png,
whose fetches it counts (a browser that renders such an image fetches it)."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer



def _pixel() -> bytes:
    """A 1x1 PNG."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", (1, 1)).save(out, format="PNG")
    return out.getvalue()


PIXEL = _pixel()


class AnswerServer:
    """Start with `AnswerServer()`, stop with `.stop()`. `.answer` is what every chat completion streams (in
    a few chunks); `.pixel_hits` counts GET /pixel.png; `.pixel_url` is that image's URL."""

    def __init__(self, answer: str = "") -> None:
        self.answer = answer
        self.pixel_hits = 0
        self.completions = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/pixel.png"):
                    server.pixel_hits += 1
                    return self._send(200, PIXEL, "image/png")
                if self.path.rstrip("/") == "/v1/models":
                    return self._send(200, json.dumps({"object": "list", "data": [
                        {"id": "stub-vl", "object": "model"}]}).encode(), "application/json")
                self._send(404, b"{}", "application/json")

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, b"{}", "application/json")
                server.completions += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                text = server.answer
                step = max(1, len(text) // 4)
                for start in range(0, len(text), step):
                    event = {"choices": [{"index": 0, "delta": {"content": text[start:start + step]}}]}
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 4}}
                self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/v1"
        self.pixel_url = f"{self.url}/pixel.png"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
