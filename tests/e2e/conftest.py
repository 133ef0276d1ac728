"""The real-browser harness: the dashboard started as a user starts it, and Debian's chromium driving it.

Fixtures (use them from any test under tests/e2e/, marked `@pytest.mark.e2e`):

    dashboard       (session) a running `streamlit run Home.py` on a free port with the tiny model
                    configured; a `Dashboard` with .url, .cache_dir, .model_dir, .log_path, .page_url(path)
    dashboard_url   (session) the same server's base URL, e.g. "http://127.0.0.1:38123"
    chromium        (session) a Playwright Browser on /usr/bin/chromium (sync API)
    browser_page    (function) a fresh Playwright Page (1400x900, 30 s default timeout); its console
                    errors are in page.console_errors. A failing test leaves test-artifacts/<test>-failure.png
    screenshot      (function) screenshot(page, "name") saves test-artifacts/name.png (the whole page) and
                    returns its Path
    wait_idle       (function) wait_idle(page) waits until Streamlit has finished the current script run
                    (its "running" indicator is gone); for pages without a live fragment

Every test here is skipped, with the reason, when /usr/bin/chromium is missing (apt-get install chromium).
Waits are on visible text (playwright's expect), never on fixed sleeps.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SERVER_START_TIMEOUT_S = 90


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if CHROMIUM.exists():
        return
    skip = pytest.mark.skip(reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep the report on the item so `browser_page` can screenshot a failing test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dashboard:
    """A dashboard process started for the tests."""

    url: str
    cache_dir: Path
    model_dir: Path
    log_path: Path
    process: subprocess.Popen

    def page_url(self, path: str = "") -> str:
        """The URL of one page, e.g. page_url("gpu_monitor") for pages/gpu_monitor.py."""
        return f"{self.url}/{path.lstrip('/')}"

    def log(self) -> str:
        """What the server printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _wait_healthy(dash: Dashboard, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if dash.process.poll() is not None:
            raise RuntimeError(f"the dashboard exited with code {dash.process.returncode}:\n{dash.log()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{dash.url}/_stcore/health", timeout=2) as r:
                if r.status == 200 and r.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the dashboard did not answer /_stcore/health within {timeout_s:.0f} s:\n{dash.log()[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def dashboard(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """`streamlit run Home.py` on a free port with VLSCOPE_MODEL=<tiny model>, an empty cache, offline.

    Stopped at the end of the session, also when a test or the start-up fails.
    """
    work = tmp_path_factory.mktemp("dashboard")
    port = _free_port()
    env = {
        **os.environ,
        "VLSCOPE_MODEL": str(tiny_model_dir),
        "VLSCOPE_CACHE_DIR": str(work / "cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(work / "hf"),
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = work / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "Home.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    dash = Dashboard(f"http://127.0.0.1:{port}", work / "cache", tiny_model_dir, log_path, process)
    try:
        _wait_healthy(dash, SERVER_START_TIMEOUT_S)
        yield dash
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def dashboard_url(dashboard: Dashboard) -> str:
    """The base URL of the running dashboard (no trailing slash)."""
    return dashboard.url


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium through Playwright's sync API (playwright cannot download browsers here)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium, request: pytest.FixtureRequest):
    """A fresh page in its own context; console errors collected in `page.console_errors`."""
    from playwright.sync_api import expect

    # Streamlit reruns take seconds on a loaded 2-core CI machine: wait on text for up to 30 s, not 5
    expect.set_options(timeout=30_000)
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None)
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            try:
                save_screenshot(page, f"{request.node.name}-failure")
            except Exception:  # noqa: BLE001 - the test's own failure is what matters
                pass
        context.close()


def save_screenshot(page, name: str) -> Path:
    """Save the whole page (not just the window) to test-artifacts/<name>.png and return the path.

    Streamlit scrolls inside its main container, so a plain full-page screenshot would stop at the
    window's height: the window is stretched to the content's height for the shot, then restored.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    size = page.viewport_size or {"width": 1400, "height": 900}
    height = page.evaluate(
        """() => Math.max(...['[data-testid="stMain"]', '[data-testid="stAppViewContainer"]', 'section.main']
              .map(s => document.querySelector(s)).filter(Boolean).map(e => e.scrollHeight), document.body.scrollHeight)"""
    )
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height), 12_000))})
    try:
        page.wait_for_timeout(300)  # let charts re-layout to the new size
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(size)
    return path


_RUNNING = ('[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"], '
            '[data-testid="stSkeleton"]')


def wait_until_idle(page, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit shows no "running" indicator and no loading skeleton."""
    page.wait_for_function(f"() => !document.querySelector({_RUNNING!r})", timeout=timeout_ms)


@pytest.fixture
def wait_idle() -> Callable[..., None]:
    """wait_idle(page, timeout_ms=60000): the current script run has finished."""
    return wait_until_idle


@pytest.fixture
def screenshot() -> Callable[..., Path]:
    """screenshot(page, name) -> test-artifacts/<name>.png of the whole page."""
    return save_screenshot
