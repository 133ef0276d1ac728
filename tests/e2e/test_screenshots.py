"""Every dashboard page in a real browser, photographed as a user sees it (1280 px wide, compressed PNGs).

The shots go to test-artifacts/pages-<page>.png. With VLSCOPE_SCREENSHOT_TAG set (e.g. `2026-12-02-after`)
they are also kept in docs/screenshots/<tag>-<page>.png, the before/after pictures an issue's closing note
describes:

    VLSCOPE_SCREENSHOT_TAG=2026-12-02-after .venv/bin/python -m pytest tests/e2e/test_screenshots.py

Each page is reached from the navigation and shows a real file: the Video Q&A page a made video, the OCR page
a rendered invoice read by the real OCR engine, the Library what those two left in the cache.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, ROOT, wait_until_idle
from tests.pages.media import make_video, text_image

pytestmark = pytest.mark.e2e

WIDTH = 1280
MAX_HEIGHT = 5000
DOCS = ROOT / "docs" / "screenshots"
INVOICE = ["ACME Supplies Ltd", "12 High Street, London", "Invoice No: INV-2041", "Date: 2026-11-30",
           "Bill to: Northwind Traders", "Subtotal 100.00", "VAT 20.00", "Total 120.00 EUR"]


def shoot(page, name: str) -> Path:
    """The whole page at 1280 px wide as a palette PNG (small enough for the repository); returns its path."""
    from PIL import Image

    size = page.viewport_size or {"width": WIDTH, "height": 900}
    height = page.evaluate(
        """() => Math.max(...['[data-testid="stMain"]', '[data-testid="stAppViewContainer"]', 'section.main']
              .map(s => document.querySelector(s)).filter(Boolean).map(e => e.scrollHeight), document.body.scrollHeight)"""
    )
    page.set_viewport_size({"width": WIDTH, "height": max(size["height"], min(int(height), MAX_HEIGHT))})
    try:
        page.wait_for_timeout(400)  # charts re-layout to the new size
        raw = page.screenshot(full_page=True)
    finally:
        page.set_viewport_size(size)
    img = Image.open(io.BytesIO(raw)).convert("RGB")
    if img.width != WIDTH:
        img = img.resize((WIDTH, round(img.height * WIDTH / img.width)))
    small = img.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"pages-{name}.png"
    small.save(path, optimize=True)
    tag = os.environ.get("VLSCOPE_SCREENSHOT_TAG", "").strip()
    if tag:
        DOCS.mkdir(parents=True, exist_ok=True)
        small.save(DOCS / f"{tag}-{name}.png", optimize=True)
    return path


def open_page(page, title: str, heading: str | None = None) -> None:
    from playwright.sync_api import expect

    if title == "Home":
        page.goto(page.context.dashboard_url)
    else:
        page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    expect(page.get_by_role("heading", name=heading or title, exact=True)).to_be_visible(timeout=60_000)
    wait_until_idle(page)


def test_every_page_photographed(dashboard, chromium, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    context = chromium.new_context(viewport={"width": WIDTH, "height": 900})
    context.dashboard_url = dashboard.url  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(60_000)
    shots: dict[str, Path] = {}
    try:
        open_page(page, "Home", "VLScope")
        expect(page.get_by_role("heading", name="Result cache")).to_be_visible()
        # the favicon is drawn by the browser (an emoji), not fetched from a font CDN (which fails offline)
        icon = page.evaluate("() => [...document.querySelectorAll('link[rel~=icon]')].map(l => l.href)")
        assert icon and not any(h.startswith("http") and not h.startswith(dashboard.url) for h in icon), icon
        shots["home"] = shoot(page, "home")

        video = make_video(tmp_path / "three-shots.mp4")
        open_page(page, "Video Q&A")
        page.locator("input[type=file]").first.set_input_files(str(video))
        expect(page.get_by_text("What the model will see")).to_be_visible()
        wait_until_idle(page)
        shots["video"] = shoot(page, "video")

        open_page(page, "Summaries")
        shots["summaries"] = shoot(page, "summaries")

        invoice = tmp_path / "invoice.png"
        invoice.write_bytes(text_image(INVOICE))
        open_page(page, "OCR")
        page.locator("input[type=file]").first.set_input_files(str(invoice))
        page.get_by_role("button", name="Read text").click()
        expect(page.get_by_text("Invoice fields", exact=True)).to_be_visible(timeout=120_000)
        wait_until_idle(page)
        shots["ocr"] = shoot(page, "ocr")

        open_page(page, "Library")
        shots["library"] = shoot(page, "library")

        open_page(page, "GPU monitor")
        page.wait_for_timeout(1500)  # one live reading
        shots["gpu_monitor"] = shoot(page, "gpu_monitor")
    finally:
        context.close()
    for name, path in shots.items():
        assert path.stat().st_size > 5_000, f"{name}: the picture is blank"
        assert path.stat().st_size < 1_500_000, f"{name}: {path.stat().st_size} bytes, too large to keep"
