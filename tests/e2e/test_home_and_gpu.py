"""The dashboard in a real browser: Home with the tiny model, and the GPU monitor on a machine without a GPU."""

from __future__ import annotations

import pytest

from core.gpu import nvml_available

pytestmark = pytest.mark.e2e


def test_home_shows_what_is_available_and_the_tiny_model(dashboard, browser_page, screenshot, wait_idle) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(dashboard.url)
    expect(page.get_by_role("heading", name="VLScope", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text("What is available")).to_be_visible()
    expect(page.get_by_text(f"found at {dashboard.model_dir}")).to_be_visible(timeout=60_000)
    model_metric = page.get_by_test_id("stMetric").filter(has_text="Model")
    expect(model_metric).to_contain_text("found")
    expect(page.get_by_role("heading", name="Result cache")).to_be_visible()
    expect(page.get_by_role("button", name="Load the model now")).to_be_visible()
    expect(page.get_by_test_id("stSidebarNav").get_by_text("GPU monitor")).to_be_visible()
    wait_idle(page)
    path = screenshot(page, "home")
    assert path.stat().st_size > 10_000


@pytest.mark.skipif(nvml_available(), reason="this machine has an NVIDIA driver: the no-GPU view cannot be seen")
def test_gpu_monitor_without_gpu_shows_cpu_and_ram(dashboard, browser_page, screenshot) -> None:
    from playwright.sync_api import expect

    page = browser_page
    page.goto(dashboard.url)
    # reach it the way a user does: from the navigation
    page.get_by_test_id("stSidebarNav").get_by_text("GPU monitor").click()
    expect(page.get_by_role("heading", name="GPU monitor")).to_be_visible(timeout=60_000)
    assert page.url.rstrip("/").endswith("/gpu_monitor")
    expect(page.get_by_text("No NVIDIA GPU available, so this page shows the CPU and RAM instead.")).to_be_visible()
    expect(page.get_by_text("Why: No NVIDIA driver on this machine")).to_be_visible()
    for label in ("CPU load", "CPU cores", "RAM used", "This app's memory"):
        expect(page.get_by_test_id("stMetric").filter(has_text=label)).to_be_visible()
    expect(page.get_by_test_id("stMetric").filter(has_text="RAM used")).to_contain_text("GiB")
    expect(page.get_by_text("No model requests yet")).to_be_visible()
    # the history chart is drawn by plotly in the browser
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    # live: the reading's clock moves on by itself within a few seconds
    caption = page.get_by_text("Reading of ")
    first = caption.inner_text()
    expect(caption).not_to_have_text(first, timeout=10_000)
    screenshot(page, "gpu_monitor")
