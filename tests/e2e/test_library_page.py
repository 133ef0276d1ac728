"""The Library and Summaries pages in a real browser (after the video and OCR tests filled the cache)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_library_lists_and_opens_files(dashboard, browser_page, screenshot, wait_idle, tmp_path) -> None:
    from playwright.sync_api import expect

    from core.library import record_file
    from core.ocr.pipeline import OcrOptions, run_ocr
    from core.cache import ResultCache
    from tests.pages.media import text_image

    # one analysed file in the dashboard's cache (as the OCR page leaves it)
    image = tmp_path / "receipt.png"
    image.write_bytes(text_image(["Corner Cafe receipt", "Espresso 2.50"]))
    with ResultCache(dashboard.cache_dir) as cache:
        from core.cache import hash_file

        sha = hash_file(image)
        record_file(cache, sha, image.name, "image", str(image), image.stat().st_size)
        run_ocr(str(image), OcrOptions(), name=image.name, cache=cache)
    page = browser_page
    page.goto(dashboard.url)
    page.get_by_test_id("stSidebarNav").get_by_text("Library").click()
    expect(page.get_by_role("heading", name="Library", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    page.get_by_test_id("stTextInputField").first.fill("espresso")
    page.get_by_test_id("stTextInputField").first.press("Enter")
    expect(page.get_by_text("matching “espresso”")).to_be_visible()
    page.get_by_test_id("stSelectbox").filter(has_text="Open").click()
    page.get_by_role("option").filter(has_text="receipt.png").click()
    expect(page.get_by_text("OCR text")).to_be_visible()
    expect(page.get_by_test_id("stCode").first).to_contain_text("Espresso 2.50")
    wait_idle(page)
    screenshot(page, "library")


def test_summaries_page_cpu_timeline_and_captions_with_the_tiny_model(dashboard, browser_page, screenshot, wait_idle,
                                                            tmp_path) -> None:
    from playwright.sync_api import expect

    from tests.pages.media import make_video

    video = make_video(tmp_path / "talk.mp4")
    page = browser_page
    page.goto(dashboard.url)
    page.get_by_test_id("stSidebarNav").get_by_text("Summaries").click()
    expect(page.get_by_role("heading", name="Summaries", exact=True)).to_be_visible(timeout=60_000)
    page.locator("input[type=file]").first.set_input_files(str(video))
    expect(page.get_by_role("button", name="Caption and summarise")).to_be_visible(timeout=60_000)
    page.get_by_role("button", name="Find scene cuts and motion (no model needed)").click()
    expect(page.get_by_text("Scenes (shots): 3")).to_be_visible(timeout=60_000)
    wait_idle(page)
    # the tiny model's captions are noise, but the whole path runs: chunks, validation, chapters, exports
    page.get_by_role("button", name="Caption and summarise").click()
    expect(page.get_by_text("events in 1 chunks").or_(page.get_by_text("No events found"))).to_be_visible(
        timeout=150_000)
    wait_idle(page)
    screenshot(page, "summaries")
