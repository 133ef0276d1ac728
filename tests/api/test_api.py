"""The HTTP API through real HTTP calls (uvicorn on a loopback port), plus one question with the tiny model."""

from __future__ import annotations

import hashlib
import os

import httpx2
import pytest

from tests.api.conftest import UPLOAD_LIMIT_MB, rendered_png

LINES = ["The quick brown fox jumps over the lazy dog.", "Invoice totals are checked against line items."]


def page_text(ocr: dict) -> str:
    return "\n".join(line["text"] for page in ocr["pages"] for line in page["lines"])


def words(text: str) -> set[str]:
    return {w.strip(".,").lower() for w in text.split()}


def test_health_info_and_openapi(live_url):
    assert httpx2.get(f"{live_url}/health").json() == {"status": "ok"}
    info = httpx2.get(f"{live_url}/info").json()
    assert info["max_upload_mb"] == UPLOAD_LIMIT_MB and info["engine"]["loaded"] is False
    assert "entries" in info["cache"]
    spec = httpx2.get(f"{live_url}/openapi.json").json()
    assert {"/ocr", "/video/analyze", "/ask", "/results/{sha256}", "/results/{sha256}/{stage}"} <= set(spec["paths"])


def test_ocr_of_a_rendered_image_returns_its_text_and_caches_it(live_url):
    png = rendered_png(LINES)
    r = httpx2.post(f"{live_url}/ocr", files={"file": ("note.png", png, "image/png")}, params={"lang": "en"},
                    timeout=120)
    assert r.status_code == 200, r.text
    data = r.json()
    text = page_text(data)
    expected = words(" ".join(LINES))
    assert len(expected & words(text)) >= len(expected) - 2, text
    digest = hashlib.sha256(png).hexdigest()
    assert data["input_hash"] == digest
    # the same cache the dashboard reads: listed by content hash, stored JSON by stage
    listing = httpx2.get(f"{live_url}/results/{digest}").json()
    assert [e["stage"] for e in listing["entries"]] == ["ocr-page"]
    stored = httpx2.get(f"{live_url}/results/{digest}/ocr-page").json()
    assert "\n".join(line["text"] for line in stored["results"][0]["value"]["lines"]) == text


def test_video_events_of_a_generated_video(live_url, cuts_video):
    with open(cuts_video, "rb") as f:
        r = httpx2.post(f"{live_url}/video/analyze", files={"file": ("cuts.mp4", f, "video/mp4")},
                        params={"stages": "scenes"}, timeout=120)
    assert r.status_code == 200, r.text
    data = r.json()
    shots = [(round(e["start"], 1), round(e["end"], 1)) for e in data["events"] if e["kind"] == "scene"]
    assert shots == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)], data["events"]  # cuts at 2.0 s and 4.0 s
    assert round(data["probe"]["duration"]) == 6 and "path" not in data
    digest = hashlib.sha256(cuts_video.read_bytes()).hexdigest()
    stages = {e["stage"] for e in httpx2.get(f"{live_url}/results/{digest}").json()["entries"]}
    assert {"video.probe", "video.scenes"} <= stages
    # a second upload of the same bytes comes from the cache
    with open(cuts_video, "rb") as f:
        again = httpx2.post(f"{live_url}/video/analyze", files={"file": ("other-name.mp4", f, "video/mp4")},
                            params={"stages": "scenes"}, timeout=120).json()
    assert again["from_cache"]["scenes"] is True and again["events"] == data["events"]


def test_uploads_above_the_limit_are_refused_with_413(live_url):
    big = os.urandom(UPLOAD_LIMIT_MB * 1024 * 1024 + 10)
    r = httpx2.post(f"{live_url}/ocr", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413
    assert f"{UPLOAD_LIMIT_MB} MiB" in r.json()["detail"] and "VLSCOPE_MAX_UPLOAD_MB" in r.json()["detail"]

    def chunks():  # a well-formed multipart body without Content-Length: refused while it streams in
        yield (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
               b"Content-Type: video/mp4\r\n\r\n")
        for _ in range(UPLOAD_LIMIT_MB + 2):
            yield b"\x00" * (1024 * 1024)
        yield b"\r\n--xyz--\r\n"

    r = httpx2.post(f"{live_url}/video/analyze", content=chunks(),
                    headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413


@pytest.mark.parametrize("path,name,payload", [
    ("/ocr", "scan.png", b"this is not an image at all"),
    ("/ocr", "empty.pdf", b""),
    ("/video/analyze", "clip.mp4", b"\x00\x00\x00\x18ftypmp42 but truncated"),
    ("/ask", "clip.mp4", b"not a video"),
    ("/ask", "page.png", b"not a picture"),
])
def test_bad_files_get_a_clear_400(live_url, path, name, payload):
    data = {"question": "What is this?"} if path == "/ask" else None
    r = httpx2.post(f"{live_url}{path}", files={"file": (name, payload)}, data=data, timeout=60)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 20 and "Traceback" not in detail


def test_bad_parameters_and_unknown_results(live_url):
    png = rendered_png(["x"])
    r = httpx2.post(f"{live_url}/video/analyze", params={"stages": "scenes,colours"},
                    files={"file": ("a.mp4", png)})
    assert r.status_code == 400 and "colours" in r.json()["detail"]
    assert httpx2.post(f"{live_url}/ocr", params={"dpi": 5}, files={"file": ("a.png", png)}).status_code == 422
    assert httpx2.get(f"{live_url}/results/not-a-hash").status_code == 422
    r = httpx2.get(f"{live_url}/results/{'0' * 64}")
    assert r.status_code == 404 and "No cached result" in r.json()["detail"]


def test_question_without_a_model_is_503_with_the_reason(live_url, api_settings):
    png = rendered_png(LINES)
    r = httpx2.post(f"{live_url}/ask", files={"file": ("note.png", png, "image/png")},
                    data={"question": "What does it say?"}, timeout=60)
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert api_settings.model in detail and "not available" in detail and "VLSCOPE_MODEL" in detail


def test_questions_with_the_tiny_model(tiny_engine, api_settings, cuts_video):
    from starlette.testclient import TestClient

    from core.api import create_app

    with TestClient(create_app(api_settings, engine=tiny_engine)) as client:
        r = client.post("/ask", files={"file": ("note.png", rendered_png(LINES), "image/png")},
                        data={"question": "What does it say?", "max_new_tokens": "5"})
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["kind"] == "document" and data["text"] and data["pages"] == [0]
        with open(cuts_video, "rb") as f:
            r = client.post("/ask", files={"file": ("cuts.mp4", f, "video/mp4")},
                            data={"question": "What happens at 2 seconds?", "max_new_tokens": "4"})
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["kind"] == "video" and data["text"] and data["frames_seen"] >= 2
        assert data["input_hash"] == hashlib.sha256(cuts_video.read_bytes()).hexdigest()
