"""The Library and Summaries pages in a real browser (after the video and OCR tests filled the cache)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def _fill(cache_dir, tmp_path) -> dict[str, str]:
    """What the OCR and Video Q&A pages leave in the dashboard's cache: a receipt read by OCR, a video read for
    scenes and on-screen text (HELLO 42 from 2 s to 4 s), and a failed upload (not a video at all)."""
    import io

    from core.analysis.video_pipeline import analyze_video
    from core.cache import ResultCache
    from core.files import store_upload
    from core.library import record_file
    from core.ocr.pipeline import OcrOptions, run_ocr
    from tests.pages.media import make_video, text_image

    out = {}
    with ResultCache(cache_dir) as cache:
        receipt = store_upload(io.BytesIO(text_image(["Corner Cafe receipt", "Espresso 2.50"])), "receipt.png",
                               cache_dir, 10**8)
        record_file(cache, receipt.sha256, receipt.name, receipt.kind, receipt.path, receipt.size_bytes)
        run_ocr(receipt.path, OcrOptions(), name=receipt.name, cache=cache)
        made = make_video(tmp_path / "made.mp4")
        video = store_upload(io.BytesIO(made.read_bytes()), "harbour tour with a long name, part one of three.mp4",
                             cache_dir, 10**8)
        record_file(cache, video.sha256, video.name, video.kind, video.path, video.size_bytes)
        analyze_video(video.path, stages=("scenes", "text"), cache=cache, input_hash=video.sha256)
        broken = store_upload(io.BytesIO(b"not a video" * 300), "broken.mp4", cache_dir, 10**8)
        record_file(cache, broken.sha256, broken.name, broken.kind, broken.path, broken.size_bytes)
        out = {"receipt": receipt.sha256, "video": video.sha256}
    return out


_CUT = """() => {
  const cut = [];
  for (const e of document.querySelectorAll('[class*="st-key-lib_"] [data-testid="stMarkdownContainer"], '
                                            + '[class*="st-key-lib_"] [data-testid="stCaptionContainer"], '
                                            + '[class*="st-key-lib_"] [data-testid="stPageLink"]')) {
    const r = e.getBoundingClientRect();
    if (e.scrollWidth > e.clientWidth + 1 || r.right > window.innerWidth) cut.push(e.innerText);
  }
  const main = document.querySelector('[data-testid="stMain"]');
  if (main && main.scrollWidth > main.clientWidth + 1) cut.push('the page scrolls sideways');
  return cut;
}"""


def _go_to_library(page) -> None:
    """Click Library in the app's own navigation (once Home.py has sent it: until then Streamlit shows its
    default list of the pages folder, whose links run a page without Home.py)."""
    from playwright.sync_api import expect

    nav = page.get_by_test_id("stSidebarNav")
    expect(nav.get_by_text("GPU monitor", exact=True)).to_be_visible(timeout=60_000)
    nav.get_by_text("Library", exact=True).click()
    expect(page.get_by_role("heading", name="Library", exact=True)).to_be_visible(timeout=60_000)


def test_library_lists_searches_and_opens_files(dashboard, browser_page, screenshot, wait_idle, tmp_path) -> None:
    import re

    from playwright.sync_api import expect

    sha = _fill(dashboard.cache_dir, tmp_path)
    page = browser_page  # 1400 x 900
    page.goto(dashboard.url)
    _go_to_library(page)
    expect(page.get_by_text("2 file(s), most recently added first")).to_be_visible()
    expect(page.get_by_text("Done: Video details, Scene cuts, On-screen text")).to_be_visible()
    expect(page.get_by_text("broken.mp4")).to_have_count(0)  # a failed upload is not an item
    wait_idle(page)
    assert page.evaluate(_CUT) == []  # nothing cut at 1400 px: every row's text and links fit
    screenshot(page, "library")

    # words read by OCR: the hit, its snippet, a link to its page
    search = page.get_by_test_id("stTextInputField").first
    search.fill("espresso")
    search.press("Enter")
    expect(page.get_by_text("“espresso” found in 1 place(s) in 1 file(s)")).to_be_visible()
    expect(page.get_by_text("receipt.png · Image · OCR text, page 1")).to_be_visible()
    expect(page.locator("strong", has_text="Espresso")).to_be_visible()
    link = page.get_by_role("link", name="Open page 1")
    expect(link).to_have_attribute("href", re.compile(rf"ocr\?file={sha['receipt']}&page=1$"))
    wait_idle(page)
    assert page.evaluate(_CUT) == []
    screenshot(page, "library-search")

    # words on screen in the video: the link plays it on Video Q&A at that moment
    search.fill("hello")
    search.press("Enter")
    expect(page.get_by_text("On-screen text at 0:0")).to_be_visible()
    play = page.get_by_role("link", name=re.compile(r"^Play at 0:0"))
    expect(play).to_have_attribute("href", re.compile(rf"video\?file={sha['video']}&t=[1-4](\.\d+)?$"))
    play.click()
    expect(page.get_by_role("heading", name="Video Q&A", exact=True)).to_be_visible(timeout=60_000)
    expect(page).to_have_url(re.compile(rf"/video\?file={sha['video']}&t="))
    expect(page.get_by_text("harbour tour with a long name, part one of three.mp4").first).to_be_visible(timeout=60_000)
    expect(page.locator("video").first).to_be_attached()

    # back in the Library: the item's details here, its player, and Delete with a question, then a confirmation
    _go_to_library(page)
    search = page.get_by_test_id("stTextInputField").first
    search.fill("")
    search.press("Enter")
    expect(page.get_by_text("2 file(s), most recently added first")).to_be_visible()
    page.locator('[class*="st-key-lib_item_details_"] button').first.click()
    expect(page.get_by_text("Events · Scenes (shots): 3")).to_be_visible()
    expect(page.locator("video")).to_have_count(1)
    wait_idle(page)
    screenshot(page, "library-details")
    page.get_by_test_id("stPopover").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("This cannot be undone.")).to_be_visible()
    page.get_by_role("button", name="Delete for good").click()
    expect(page.get_by_text(re.compile(r"^Deleted harbour tour with a long name, part one of three\.mp4: \d+ stored "
                                       r"result\(s\)"))).to_be_visible()
    expect(page.get_by_text("1 file(s), most recently added first")).to_be_visible()
    wait_idle(page)


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
