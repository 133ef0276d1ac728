"""Issue 12, the API's part: sign-in with bearer tokens (D2), busy answers (D3), abandoned requests,
leftover upload folders, internal paths in messages and the documented error answers (D12)."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from starlette.testclient import TestClient

from core.auth import User, hash_token, new_token, save_users
from core.settings import Settings
from tests.api.conftest import free_port, rendered_png, serving

ROOT = Path(__file__).resolve().parents[2]


def settings_for(tmp_path: Path, **extra) -> Settings:
    return Settings(model=str(tmp_path / "no-model-here"), offline=True, cache_dir=tmp_path / "cache",
                    max_upload_mb=2, **extra)


def users_file(path: Path, **tokens: list[str]) -> Path:
    """A users file whose users have these (plain) tokens, stored hashed as `vlscope users token` does."""
    save_users(path, {name: User(name, tokens=[hash_token(t) for t in plain]) for name, plain in tokens.items()})
    return path


# --- D2: the API wants a bearer token of the users file --------------------------------------------------------

def test_break2_api_needs_a_bearer_token_of_the_users_file(tmp_path: Path) -> None:
    from core.api import create_app

    alice = new_token()
    auth = users_file(tmp_path / "users.toml", alice=[alice])
    app = create_app(settings_for(tmp_path, auth_file=auth))
    with serving(app) as url:
        assert httpx2.get(f"{url}/health").json() == {"status": "ok"}  # liveness stays open

        r = httpx2.get(f"{url}/info")
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Authorization: Bearer TOKEN" in r.json()["detail"]
        assert "vlscope users token NAME" in r.json()["detail"]

        r = httpx2.get(f"{url}/info", headers={"Authorization": "Bearer vls_not-a-token"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
        assert "not accepted" in r.json()["detail"] and "vlscope users token NAME" in r.json()["detail"]

        # uploads are refused before anything is read, and so are stored results
        r = httpx2.post(f"{url}/ocr", files={"file": ("note.png", rendered_png(["Hello"]), "image/png")})
        assert r.status_code == 401
        assert httpx2.get(f"{url}/results/{'0' * 64}").status_code == 401

        r = httpx2.get(f"{url}/info", headers={"Authorization": f"Bearer {alice}"})
        assert r.status_code == 200 and r.json()["user"] == "alice"  # the request ran as alice
        r = httpx2.get(f"{url}/results/{'0' * 64}", headers={"Authorization": f"bearer {alice}"})
        assert r.status_code == 404

        # a token added while the server runs works at once (the users file is re-read when it changes)
        bob = new_token()
        users_file(auth, alice=[alice], bob=[bob])
        r = httpx2.get(f"{url}/info", headers={"Authorization": f"Bearer {bob}"})
        assert r.status_code == 200 and r.json()["user"] == "bob"
        users_file(auth, bob=[bob])  # alice's token revoked
        assert httpx2.get(f"{url}/info", headers={"Authorization": f"Bearer {alice}"}).status_code == 401

        # the description of the API stays readable and says how to sign in
        spec = httpx2.get(f"{url}/openapi.json").json()
        assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert spec["paths"]["/ocr"]["post"]["security"] == [{"bearer": []}]
        assert "security" not in spec["paths"]["/health"]["get"]
        assert httpx2.get(f"{url}/docs").status_code == 200


def test_break2_a_missing_users_file_stops_the_api_from_starting(tmp_path: Path) -> None:
    from core.api import create_app
    from core.auth import AuthError

    with pytest.raises(AuthError, match="vlscope users add NAME"):
        create_app(settings_for(tmp_path, auth_file=tmp_path / "nobody.toml"))


def test_break2_serve_refuses_every_interface_without_sign_in(tmp_path: Path) -> None:
    config = tmp_path / "vlscope.toml"
    config.write_text(f'cache_dir = "{tmp_path / "cache"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLSCOPE_")}
    env["VLSCOPE_CONFIG"] = str(config)
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "core.cli", "serve", "--host", "0.0.0.0", "--port", str(port)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "The API would listen on 0.0.0.0 with no sign-in" in done.stderr
    assert "VLSCOPE_AUTH_FILE" in done.stderr and "VLSCOPE_ALLOW_OPEN_NETWORK=true" in done.stderr
    assert "Traceback" not in done.stderr and "VLScope API on" not in done.stdout  # refused before listening
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"http://127.0.0.1:{port}/health", timeout=2)


# --- D3: a busy server says so (503 + Retry-After); user errors are 4xx with their message --------------------

@pytest.fixture
def tiny_heavy_work(tmp_path: Path):
    """Settings whose heavy-work bound is 1 MiB with a 0.3 s wait, and that bound (reset afterwards)."""
    from core.limits import heavy_work, reset_heavy_work

    settings = settings_for(tmp_path, heavy_work_memory_gb=1 / 1024, busy_timeout_s=0.3)
    reset_heavy_work()
    yield settings, heavy_work(settings)
    reset_heavy_work()


def test_break3_busy_and_user_errors_become_their_answers(tiny_heavy_work, tmp_path: Path) -> None:
    from core.api import create_app
    from core.files import open_server_file

    settings, bound = tiny_heavy_work
    app = create_app(settings)
    media = tmp_path / "media"
    media.mkdir()

    @app.get("/test/heavy")
    def heavy() -> dict[str, str]:
        from core.limits import heavy_work

        with heavy_work(settings).hold(512 * 1024, "decoding big.png"):
            return {"status": "done"}

    @app.get("/test/open")
    def open_path(path: str) -> dict[str, str]:
        return {"name": open_server_file(path, media).name}

    with TestClient(app) as client:
        assert client.get("/test/heavy").json() == {"status": "done"}
        with bound.hold(1024 * 1024, "another request"):
            r = client.get("/test/heavy")
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) > 0
        assert r.json()["detail"].startswith("The server is busy: decoding big.png needs about")
        assert "Try again" in r.json()["detail"]
        r = client.get("/test/open", params={"path": "../etc/passwd"})
        assert r.status_code == 400 and "outside the allowed media folder" in r.json()["detail"]


def test_break3_ocr_on_a_busy_server_is_503_with_retry_after(tiny_heavy_work) -> None:
    """OCR holds the heavy-work bound (core/ocr); while other work holds all of it, the answer is 503."""
    from core.api import create_app

    settings, bound = tiny_heavy_work
    png = rendered_png(["The quick brown fox"])
    with TestClient(create_app(settings)) as client, bound.hold(bound.capacity, "another request"):
        r = client.post("/ocr", files={"file": ("note.png", png, "image/png")})
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) > 0
    assert r.json()["detail"].startswith("The server is busy") and "note.png" in r.json()["detail"]


# --- D12 --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 minutes of ffmpeg's test pattern at 320x180, 25 fps (15000 frames: about 13 s of analysis here)."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "600",
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "45", "-pix_fmt", "yuv420p", str(path)],
                   check=True, timeout=120)
    return path


def test_break12a_work_of_a_client_that_left_is_cancelled(tmp_path: Path, long_video: Path, caplog) -> None:
    from core.api import create_app
    from core.cache import open_cache

    caplog.set_level(logging.INFO, logger="core.api.app")
    settings = settings_for(tmp_path).model_copy(update={"max_upload_mb": 50})
    digest = hashlib.sha256(long_video.read_bytes()).hexdigest()
    with open_cache(settings) as cache:
        app = create_app(settings, cache=cache)
        with serving(app) as url:
            with httpx2.Client(timeout=httpx2.Timeout(30, read=1.5)) as client, open(long_video, "rb") as f:
                with pytest.raises(httpx2.ReadTimeout):  # the client gives up and closes the connection
                    client.post(f"{url}/video/analyze", files={"file": ("long.mp4", f, "video/mp4")},
                                params={"stages": "scenes,motion"})
            left = time.monotonic()
            while app.state.work.running and time.monotonic() - left < 20:
                time.sleep(0.05)
            stopped = time.monotonic()
            assert app.state.work.running == 0 and app.state.work.abandoned == 1
            stages = {e.stage for e in cache.entries(digest)}
        # the analysis began (the probe is stored) and stopped half-way: no scenes result was stored
        assert "video.probe" in stages and "video.scenes" not in stages and "video.motion" not in stages
        assert stopped - left < 5, f"the work ran {stopped - left:.1f} s after the client left"
        assert any("client left" in r.getMessage() and "long.mp4" in r.getMessage() for r in caplog.records)


def test_break12b_upload_folders_left_by_a_crash_are_removed_at_start(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    from core.api import create_app

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    hour_ago = time.time() - 3600

    def folder(name: str, old: bool = True, uid: int | None = None) -> Path:
        path = temp / name
        path.mkdir()
        (path / "upload.mp4").write_bytes(b"x" * 1000)
        if uid is not None:
            os.chown(path, uid, uid)
        if old:
            os.utime(path, (hour_ago, hour_ago))
        return path

    crashed = folder(f"vlscope-upload-{dead}-ab12cd")
    older_version = folder("vlscope-upload-_s3u3fb5")  # the name before folders carried their pid
    running = folder(f"vlscope-upload-{os.getpid()}-ef34gh")  # this very process: in use
    recent = folder(f"vlscope-upload-{dead}-ij56kl", old=False)  # maybe another namespace's, just made
    unrelated = folder("something-else")
    foreign = folder(f"vlscope-upload-{dead}-mn78op", uid=65534) if os.getuid() == 0 else None

    with TestClient(create_app(settings_for(tmp_path))) as client:
        assert not crashed.exists() and not older_version.exists()
        assert running.exists() and recent.exists() and unrelated.exists()
        if foreign is not None:
            assert foreign.exists()  # another user's
        r = client.post("/ocr", files={"file": ("scan.png", b"not an image")})
        assert r.status_code == 400
    left = sorted(p.name for p in temp.iterdir())
    assert left == sorted(p.name for p in (running, recent, unrelated, foreign) if p is not None)  # none added


@pytest.mark.parametrize("path,name,payload", [
    ("/video/analyze", "holiday clip.mp4", b"\x00\x00\x00\x18ftypmp42 but truncated"),
    ("/ask", "holiday clip.mp4", b"not a video"),
    ("/ocr", "scan 7.png", b"this is not an image at all"),
    ("/ocr", "report.pdf", b"%PDF-1.4 broken"),
])
def test_break12c_messages_name_the_upload_not_a_temporary_path(live_url, path, name, payload) -> None:
    data = {"question": "What is this?"} if path == "/ask" else None
    r = httpx2.post(f"{live_url}{path}", files={"file": (name, payload)}, data=data, timeout=60)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert name in detail
    assert "/tmp" not in detail and "vlscope-upload" not in detail and "upload." not in detail, detail


def test_break12f_openapi_documents_the_error_answers(tmp_path: Path, live_url) -> None:
    from core.api import create_app

    spec = httpx2.get(f"{live_url}/openapi.json").json()
    assert spec["components"]["schemas"]["ErrorDetail"]["properties"]["detail"]["type"] == "string"
    ref = {"$ref": "#/components/schemas/ErrorDetail"}

    def errors(path: str, method: str) -> dict[str, dict]:
        return {code: answer for code, answer in spec["paths"][path][method]["responses"].items()
                if code not in ("200", "422")}

    for path in ("/ocr", "/video/analyze", "/ask"):
        answers = errors(path, "post")
        assert set(answers) == {"400", "413", "503"}, (path, set(answers))
        for answer in answers.values():
            assert answer["content"]["application/json"]["schema"] == ref and answer["description"]
        assert "Retry-After" in answers["503"]["headers"]
    for path in ("/results/{sha256}", "/results/{sha256}/{stage}"):
        assert set(errors(path, "get")) == {"404"}
    # with sign-in every endpoint but /health also documents its 401
    auth = users_file(tmp_path / "users.toml", alice=[new_token()])
    with TestClient(create_app(settings_for(tmp_path, auth_file=auth))) as client:
        signed = client.get("/openapi.json").json()
    for path, operations in signed["paths"].items():
        for operation in operations.values():
            assert ("401" in operation["responses"]) == (path != "/health"), path
