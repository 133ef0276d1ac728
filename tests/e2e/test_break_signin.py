"""Issue 12 in a real browser (Debian's chromium): each test starts its own dashboard, as a user starts it,
with the settings it is about.

D8: a file named like a Markdown image and a model answer holding one (and raw <img> HTML) are shown as
text: the browser never requests the image (a server on 127.0.0.1 counts requests for /pixel.png).
D2: with VLSCOPE_AUTH_OIDC and a real OpenID Connect provider (oidc-provider-mock on 127.0.0.1), the
dashboard shows only "Sign in"; signing in at the provider brings the user back, named in the sidebar.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests.dashboard.stubs import AnswerServer
from tests.e2e.conftest import ROOT, Dashboard, _free_port, _stop, _wait_healthy
from tests.pages.media import make_video

pytestmark = pytest.mark.e2e


def _start(work: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> Dashboard:
    """`streamlit run Home.py` on a free port with the given VLSCOPE_* settings and extra options."""
    port = int(env.pop("PORT", 0)) or _free_port()
    full_env = {**os.environ, "VLSCOPE_CACHE_DIR": str(work / "cache"), "VLSCOPE_MODEL": str(work / "no-model"),
                "HF_HUB_OFFLINE": "1", "HF_HOME": str(work / "hf"), "PYTHONUNBUFFERED": "1", **env}
    for name in ("VLSCOPE_AUTH_FILE", "VLSCOPE_AUTH_OIDC", "VLSCOPE_ENGINE", "VLSCOPE_MEDIA_ROOT"):
        if name not in env:
            full_env.pop(name, None)
    log_path = work / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    dash = Dashboard(f"http://127.0.0.1:{port}", work / "cache", work / "no-model", log_path, process)
    try:
        _wait_healthy(dash, 90)
    except BaseException:
        _stop(process)
        raise
    return dash


@pytest.fixture
def answer_server() -> Iterator[AnswerServer]:
    server = AnswerServer()
    yield server
    server.stop()


def test_break8_names_and_answers_never_make_the_browser_fetch_an_image(browser_page, answer_server, wait_idle,
                                                                        screenshot, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    pixel = answer_server.pixel_url
    answer_server.answer = f"The ball is **red**. ![x]({pixel}) <img src=\"{pixel}\">"
    # backslashes: a file name cannot hold '/', and browsers read '\' as '/' in http URLs
    name = f"![x](http:\\\\127.0.0.1:{answer_server.port}\\pixel.png).mp4"
    video = make_video(tmp_path / "cuts.mp4").rename(tmp_path / name)
    dash = _start(tmp_path, {"VLSCOPE_ENGINE": "remote", "VLSCOPE_REMOTE_URL": answer_server.api_url,
                             "VLSCOPE_REMOTE_API_KEY": "sk-test"})
    try:
        page = browser_page
        page.goto(dash.url)
        page.get_by_test_id("stSidebarNav").get_by_text("Video Q&A").click()
        expect(page.get_by_role("heading", name="Video Q&A")).to_be_visible(timeout=60_000)
        page.locator("input[type=file]").first.set_input_files(str(video))
        expect(page.get_by_text("What the model will see")).to_be_visible(timeout=60_000)
        wait_idle(page)
        page.wait_for_timeout(500)  # let any (wrongly) rendered image request go out
        assert answer_server.pixel_hits == 0, "the file name was rendered as an image"
        # (chromium encodes the backslashes, so that image would not reach this server: check the page too)
        assert page.locator("[data-testid=stCaptionContainer] img").count() == 0
        # the caption shows the file's name as the characters it is (chromium sends "http:\\" as "http:\")
        caption = page.get_by_test_id("stCaptionContainer").filter(has_text=" · 0:06")
        expect(caption).to_have_text(re.compile(r"^!\[x\]\(http:\\{1,2}127\.0\.0\.1:%d\\pixel\.png\)\.mp4 · 0:06"
                                                % answer_server.port))
        sent = caption.inner_text().split(" · ")[0].strip()
        wait_idle(page)

        page.get_by_text("Refine the times it names").click()
        wait_idle(page)
        page.get_by_label("Question").fill("What colour is the ball?")
        page.get_by_label("Question").press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="Ask").click()
        chat = page.get_by_test_id("stChatMessage")
        expect(chat).to_contain_text("The ball is red.", timeout=60_000)
        expect(chat.locator("strong")).to_have_text("red")  # the answer keeps its formatting
        expect(chat).to_contain_text(f"<img src=\"{pixel}\">")  # HTML shown as the characters it is
        wait_idle(page)
        page.wait_for_timeout(500)
        assert answer_server.pixel_hits == 0, "the answer was rendered with its image"
        assert chat.locator("img").count() == 0
        screenshot(page, "break8-video-answer")

        # every viewer of the library sees the stored name: as text
        page.get_by_test_id("stSidebarNav").get_by_text("Library").click()
        expect(page.get_by_role("heading", name="Library")).to_be_visible(timeout=60_000)
        wait_idle(page)
        expect(page.get_by_text(sent).first).to_be_visible(timeout=30_000)  # the item's card names it, as text
        page.locator('[class*="st-key-lib_item_details_"] button').first.click()
        expect(page.get_by_role("heading", name=sent)).to_be_visible(timeout=30_000)
        wait_idle(page)
        page.wait_for_timeout(500)  # let any (wrongly) rendered image request go out
        screenshot(page, "break8-library")
        assert page.locator("img[src*='pixel.png']").count() == 0
        assert answer_server.pixel_hits == 0, "the library rendered the stored name as an image"
        assert answer_server.completions == 1
    finally:
        _stop(dash.process)


# --------------------------------------------------------------------------------------------- D2


@pytest.fixture
def oidc_provider() -> Iterator[str]:
    """oidc-provider-mock (a real OpenID Connect provider for tests) on 127.0.0.1; yields its issuer URL."""
    pytest.importorskip("authlib", reason="st.login needs Authlib (pip install 'Authlib>=1.3.2')")
    mock = pytest.importorskip("oidc_provider_mock", reason="pip install oidc-provider-mock")
    import werkzeug.serving

    server = werkzeug.serving.make_server("127.0.0.1", 0, mock.app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_break2_oidc_sign_in_with_a_real_provider(browser_page, oidc_provider: str, wait_idle, screenshot,
                                                  tmp_path: Path) -> None:
    from playwright.sync_api import expect

    port = _free_port()
    secrets = tmp_path / "secrets.toml"  # the repo's .streamlit/ is left alone
    secrets.write_text(
        "[auth]\n"
        f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
        'cookie_secret = "a-test-cookie-secret-that-is-long-enough-0123456789"\n'
        'client_id = "vlscope-dashboard"\n'
        'client_secret = "test-client-secret"\n'
        f'server_metadata_url = "{oidc_provider}/.well-known/openid-configuration"\n')
    dash = _start(tmp_path, {"VLSCOPE_AUTH_OIDC": "true", "PORT": str(port)}, ("--secrets.files", str(secrets)))
    try:
        page = browser_page
        page.goto(dash.url)
        expect(page.get_by_role("heading", name="Sign in to VLScope")).to_be_visible(timeout=60_000)
        expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)  # no page is reachable yet
        page.get_by_role("button", name="Sign in").click()

        # the provider's own form
        page.wait_for_url(f"{oidc_provider}/**", timeout=30_000)
        page.locator("input[name=sub]").fill("alice@example.com")
        page.get_by_role("button", name="Authorize").click()

        page.wait_for_url(f"{dash.url}/**", timeout=30_000)
        expect(page.get_by_role("heading", name="VLScope", exact=True)).to_be_visible(timeout=60_000)
        sidebar = page.get_by_test_id("stSidebar")
        expect(sidebar).to_contain_text("Signed in as alice@example.com")
        expect(sidebar.get_by_role("link", name="alice@example.com")).to_have_count(0)  # a name, as text
        expect(page.get_by_test_id("stSidebarNav")).to_contain_text("Video Q&A")
        wait_idle(page)
        screenshot(page, "break2-oidc-signed-in")

        # sign out: the dashboard forgets the user, the provider ends its session and sends the browser back
        sidebar.get_by_role("button", name="Sign out").click()
        page.get_by_role("button", name="End session").click(timeout=30_000)  # the provider's confirmation
        page.wait_for_url(f"{dash.url}/**", timeout=30_000)
        expect(page.get_by_role("heading", name="Sign in to VLScope")).to_be_visible(timeout=60_000)
        page.goto(dash.url)  # a new visit is not signed in either
        expect(page.get_by_role("heading", name="Sign in to VLScope")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Signed in as")).to_have_count(0)
    finally:
        _stop(dash.process)
