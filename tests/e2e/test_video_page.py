"""The Video Q&A page in a real browser: upload a made video, analyse it, click an event, the player seeks there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pages.media import make_video

pytestmark = pytest.mark.e2e


def test_clicking_an_event_on_the_timeline_seeks_the_player(dashboard, browser_page, screenshot, wait_idle,
                                                            tmp_path: Path) -> None:
    from playwright.sync_api import expect

    video = make_video(tmp_path / "three-shots.mp4")
    page = browser_page
    page.goto(dashboard.url)  # as a user does: Home, then the navigation
    page.get_by_test_id("stSidebarNav").get_by_text("Video Q&A").click()
    expect(page.get_by_role("heading", name="Video Q&A")).to_be_visible(timeout=60_000)
    wait_idle(page)
    screenshot(page, "video-empty")
    page.locator("input[type=file]").first.set_input_files(str(video))
    expect(page.get_by_text("What the model will see")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stMetric").filter(has_text="Frames")).to_contain_text("12")
    expect(page.locator("video")).to_be_attached()
    wait_idle(page)
    # on-screen text reads frames with OCR: slow on this CPU, not needed here
    page.get_by_test_id("stCheckbox").filter(has_text="On-screen text").locator("label").click()
    wait_idle(page)
    page.get_by_role("button", name="Analyze").click()
    expect(page.get_by_text("Scenes (shots): 3")).to_be_visible(timeout=90_000)
    plot = page.locator(".js-plotly-plot").first
    expect(plot).to_be_visible()
    wait_idle(page)
    assert page.evaluate("document.querySelector('video').currentTime") == 0

    # the scene lane is the marker trace with one diamond per shot (3); its second diamond is shot 2, at 2.0 s.
    # Other lanes come first when they have points (an earlier test's answer times on this video, kept in its
    # conversation), so the lane is found by its diamonds, not by its place.
    traces = plot.locator(".scatterlayer .trace")
    lanes = [traces.nth(i).locator("path.point") for i in range(traces.count())]
    scene_lane = [points for points in lanes if points.count() == 3]
    assert scene_lane, [points.count() for points in lanes]
    diamond = scene_lane[0].nth(1)
    diamond.scroll_into_view_if_needed()
    box = diamond.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(page.get_by_text("Selected:")).to_be_visible(timeout=30_000)
    page.wait_for_function("() => Math.abs(document.querySelector('video').currentTime - 2) < 0.5", timeout=30_000)
    expect(page.get_by_text("Player set to 0:02")).to_be_visible()
    wait_idle(page)
    page.mouse.move(5, 5)
    screenshot(page, "video-timeline")
    assert not [e for e in page.console_errors if "plotly" in e.lower()]
