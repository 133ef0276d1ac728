"""The OCR page in a real browser: upload a rendered image, read it, the text appears."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pages.media import text_image

pytestmark = pytest.mark.e2e


def test_ocr_of_an_uploaded_image_shows_its_text(dashboard, browser_page, screenshot, wait_idle,
                                                 tmp_path: Path) -> None:
    from playwright.sync_api import expect

    image = tmp_path / "note.png"
    image.write_bytes(text_image(["Meeting notes 2025", "Budget approved 1200 EUR"]))
    page = browser_page
    page.goto(dashboard.url)
    page.get_by_test_id("stSidebarNav").get_by_text("OCR").click()
    expect(page.get_by_role("heading", name="OCR", exact=True)).to_be_visible(timeout=60_000)
    page.locator("input[type=file]").first.set_input_files(str(image))
    page.get_by_role("button", name="Read text").click()
    expect(page.get_by_text("2 lines", exact=False)).to_be_visible(timeout=90_000)
    code = page.get_by_test_id("stCode").first
    expect(code).to_contain_text("Meeting notes 2025")
    expect(code).to_contain_text("Budget approved 1200 EUR")
    expect(page.get_by_test_id("stDownloadButton").filter(has_text="Searchable PDF")).to_be_visible()
    wait_idle(page)
    page.get_by_role("tab", name="Boxes on the page").click()
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    page.get_by_text("Preprocessing: before and after").click()
    wait_idle(page)
    screenshot(page, "ocr")
