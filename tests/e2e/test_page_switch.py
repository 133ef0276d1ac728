"""Changing pages in a real browser, as a user does: the file and the running job stay (the file on every page,
the job in the sidebar and back on its page), coming back and uploading the same file again works (the
one-handle slider and its TypeError), and a follow-up answer streams piece by piece under the earlier one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pages.media import make_video

pytestmark = pytest.mark.e2e


def _nav(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()


def _open_video_page(page, dashboard, wait_idle) -> None:
    from playwright.sync_api import expect

    page.goto(dashboard.url)
    _nav(page, "Video Q&A")
    expect(page.get_by_role("heading", name="Video Q&A")).to_be_visible(timeout=60_000)
    wait_idle(page)


def _upload(page, video: Path) -> None:
    from playwright.sync_api import expect

    page.locator("input[type=file]").first.set_input_files(str(video))
    expect(page.get_by_text("What the model will see")).to_be_visible(timeout=60_000)


def _window_handles(page):
    return page.get_by_test_id("stSlider").filter(has_text="Time window").get_by_role("slider")


def test_coming_back_and_uploading_the_same_file_again(dashboard, browser_page, wait_idle, screenshot,
                                                     tmp_path: Path) -> None:
    from playwright.sync_api import expect

    video = make_video(tmp_path / "again.mp4")
    page = browser_page
    _open_video_page(page, dashboard, wait_idle)
    _upload(page, video)
    expect(_window_handles(page)).to_have_count(2)
    wait_idle(page)
    _nav(page, "Library")
    expect(page.get_by_role("heading", name="Library")).to_be_visible()
    wait_idle(page)
    _nav(page, "Video Q&A")
    expect(page.get_by_role("heading", name="Video Q&A")).to_be_visible()
    wait_idle(page)
    _upload(page, video)  # what a user does when the uploader looks empty
    wait_idle(page)
    expect(_window_handles(page)).to_have_count(2)
    expect(page.get_by_test_id("stMetric").filter(has_text="Visual tokens")).to_be_visible()
    assert page.get_by_test_id("stException").count() == 0
    assert page.get_by_text("TypeError").count() == 0
    # and with no new upload: the file is still open (the uploader itself is empty after a page change)
    _nav(page, "Home")
    expect(page.get_by_role("heading", name="VLScope")).to_be_visible()
    wait_idle(page)
    _nav(page, "Video Q&A")
    expect(page.get_by_text("Open: again.mp4")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("What the model will see")).to_be_visible()
    expect(_window_handles(page)).to_have_count(2)
    wait_idle(page)
    screenshot(page, "video-after-coming-back")


def test_a_running_job_and_its_file_survive_a_page_change(dashboard, browser_page, wait_idle, screenshot,
                                                        tmp_path: Path) -> None:
    from playwright.sync_api import expect

    video = make_video(tmp_path / "long-talk.mp4", seconds=240)  # on-screen text of 4 minutes: a long job here
    page = browser_page
    _open_video_page(page, dashboard, wait_idle)
    _upload(page, video)
    wait_idle(page)
    page.get_by_role("button", name="Analyze").click()
    progress = page.get_by_text("Analysing long-talk.mp4:")
    expect(progress.first).to_be_visible(timeout=60_000)

    # mid-job: Home lists the job in the sidebar, with its progress
    _nav(page, "Home")
    expect(page.get_by_role("heading", name="VLScope")).to_be_visible()
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("Analysing long-talk.mp4:")).to_be_visible(timeout=30_000)
    expect(sidebar.get_by_text("Video: long-talk.mp4")).to_be_visible()
    # the same video is the current file of the Summaries page
    _nav(page, "Summaries")
    expect(page.get_by_role("heading", name="Summaries")).to_be_visible()
    expect(page.get_by_text("Open: long-talk.mp4")).to_be_visible(timeout=60_000)
    screenshot(page, "summaries-with-the-open-video")
    # back through the sidebar's link: the file and the job's live progress are there
    sidebar.get_by_role("link", name="Open on Video Q&A").first.click()
    expect(page.get_by_role("heading", name="Video Q&A")).to_be_visible()
    expect(page.get_by_text("long-talk.mp4 · 4:00")).to_be_visible(timeout=60_000)
    main = page.get_by_test_id("stMain")
    expect(main.get_by_test_id("stProgress").filter(has_text="Analysing long-talk.mp4:")).to_be_visible(
        timeout=30_000)
    expect(main.get_by_text("runs in the background")).to_be_visible()
    before = main.get_by_test_id("stProgress").first.inner_text()
    page.wait_for_function(
        """(before) => { const p = document.querySelector('[data-testid="stMain"] [data-testid="stProgress"]');
                         return !p || p.innerText !== before; }""", arg=before, timeout=60_000)  # it moves
    screenshot(page, "video-job-reattached")
    main.get_by_role("button", name="Cancel").click()  # leave the CPU to the other tests
    expect(main.get_by_text("was cancelled")).to_be_visible(timeout=60_000)


_WATCH = """() => {
  window.__seen = [];
  const t0 = performance.now();
  const look = () => {
    const bubbles = [...document.querySelectorAll('[data-testid="stChatMessage"]')];
    const last = bubbles[bubbles.length - 1];
    if (!last) return;
    const previous = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
      .filter(c => c.innerText.includes('Answer to: Describe the video'));
    // the earlier answer shown after (under) the bubble being written: what the user must not see
    const below = previous.some(c => last.compareDocumentPosition(c) & Node.DOCUMENT_POSITION_FOLLOWING
                                     && !last.contains(c));
    window.__seen.push([performance.now() - t0, last.innerText, below, last.innerText.includes('▌')]);
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_a_follow_up_streams_piece_by_piece_under_the_earlier_answer(dashboard, browser_page, wait_idle,
                                                                    screenshot, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    video = make_video(tmp_path / "chat.mp4")
    page = browser_page
    _open_video_page(page, dashboard, wait_idle)
    _upload(page, video)
    tokens = page.get_by_test_id("stSidebar").get_by_label("Max new tokens")
    tokens.fill("200")
    tokens.press("Enter")
    wait_idle(page)
    question = page.get_by_label("Question", exact=True)
    question.fill("Describe the video")
    question.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Ask").click()
    expect(page.get_by_text("frames seen")).to_be_visible(timeout=180_000)  # the first question loads the model
    wait_idle(page)

    page.evaluate(_WATCH)
    question.fill("And the colours?")
    question.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Ask").click()
    expect(page.get_by_text("Answer to: And the colours?")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stChatMessage").last).to_contain_text("frames seen", timeout=120_000)
    wait_idle(page, 120_000)
    expect(page.get_by_text("frames seen")).to_have_count(1)  # what an answer cost: said for the newest only
    seen = page.evaluate("window.__seen")
    assert not any(below for _t, _n, below, _c in seen), "the earlier answer was shown under the new one"
    streaming = [text.replace("▌", "").strip() for _t, text, _below, cursor in seen if cursor]
    assert streaming, "the answer was never shown while it was being written"
    final = page.get_by_test_id("stChatMessage").last.inner_text()
    answer = final[:final.index("frames seen")].rsplit("\n", 1)[0].strip()  # the bubble without what it cost
    assert len(streaming[0]) < len(answer), f"only the whole answer was shown: {streaming[:5]} / {answer!r}"
    # how many pieces reach the browser depends on the machine, not on the page: Streamlit merges redraws the
    # browser has not received yet, and a busy 2-core CI machine showed the tiny model's answer in 3 pieces (a
    # quiet one in dozens). That every piece is drawn as it comes is checked without a browser or timing in
    # tests/pages/test_conversations.py (one redraw per piece).
    # both answers once each, in the order asked
    asked = page.get_by_test_id("stCaptionContainer").filter(has_text="Answer to:")
    expect(asked).to_have_count(2)
    assert [c.strip() for c in asked.all_inner_texts()] == ["Answer to: Describe the video",
                                                           "Answer to: And the colours?"]
    screenshot(page, "video-conversation")
