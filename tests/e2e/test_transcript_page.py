"""The transcript on the Video Q&A page in a real browser: a video whose sound is espeak-ng speech is transcribed in
the background (the real PocketSphinx), the transcript appears beside the player and as the player's subtitles,
and a click on a segment's time moves the player's currentTime there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.speech_ui.conftest import make_speech_video

pytestmark = pytest.mark.e2e


def test_transcribe_then_a_click_on_a_segment_seeks_the_player(dashboard, browser_page, screenshot, wait_idle,
                                                               tmp_path: Path) -> None:
    video = make_speech_video(tmp_path, name="talk.mp4")
    try:
        _transcribe_and_seek(dashboard, browser_page, screenshot, wait_idle, video)
    finally:  # the other browser tests count the Library's files: this one leaves none behind
        from core.cache import ResultCache, hash_file
        from core.library import delete_item

        with ResultCache(dashboard.cache_dir) as cache:
            delete_item(cache, hash_file(video), dashboard.cache_dir)


def _transcribe_and_seek(dashboard, page, screenshot, wait_idle, video: Path) -> None:
    from playwright.sync_api import expect

    page.goto(dashboard.url)
    page.get_by_test_id("stSidebarNav").get_by_text("Video Q&A").click()
    expect(page.get_by_role("heading", name="Video Q&A")).to_be_visible(timeout=60_000)
    wait_idle(page)
    page.locator("input[type=file]").first.set_input_files(str(video))
    expect(page.get_by_text("What the model will see")).to_be_visible(timeout=60_000)
    expect(page.locator("video")).to_be_attached()
    wait_idle(page)
    speech = page.get_by_test_id("stCheckbox").filter(has_text="Speech (transcribes the sound)")
    expect(speech.locator("input")).to_be_checked()  # on by default: the video has sound
    for name in ("Scene cuts", "Motion", "On-screen text"):  # the frames' stages are not what is tested here
        page.get_by_test_id("stCheckbox").filter(has_text=name).locator("label").click()
        wait_idle(page)
    page.get_by_role("button", name="Analyze").click()
    expect(page.get_by_text("heard by PocketSphinx")).to_be_visible(timeout=90_000)
    expect(page.get_by_text("Timeline · Speech: 2")).to_be_visible()
    wait_idle(page)
    segment = page.get_by_role("button", name="▶ 0:06")
    expect(segment).to_be_visible()
    expect(page.get_by_text("presentation").first).to_be_visible()
    assert page.evaluate("document.querySelector('video').currentTime") == 0
    # the player carries the transcript as its subtitle track (the browser shows what is said as it plays)
    assert page.evaluate("[...document.querySelectorAll('video track')].map(t => t.label)") == ["Speech"]

    segment.scroll_into_view_if_needed()
    segment.click()
    page.wait_for_function("() => Math.abs(document.querySelector('video').currentTime - 6) < 0.5", timeout=30_000)
    expect(page.get_by_text("Said at the player's position (0:06)")).to_be_visible()
    wait_idle(page)
    # the subtitle track's cues are the transcript's segments; played from here (muted), the browser shows the
    # segment being said: the transcript follows playback
    page.wait_for_function("() => { const t = document.querySelector('video').textTracks[0];"
                           " return t && t.cues && t.cues.length === 2; }", timeout=30_000)
    cues = page.evaluate("() => [...document.querySelector('video').textTracks[0].cues]"
                         ".map(c => [c.startTime, c.text])")
    assert [round(start) for start, _ in cues] == [1, 6] and "morning" in cues[0][1]
    page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => { const t = document.querySelector('video').textTracks[0];"
                           " return t.activeCues && t.activeCues.length > 0; }", timeout=30_000)
    active = page.evaluate("() => { const v = document.querySelector('video'); v.pause();"
                           " return [...v.textTracks[0].activeCues].map(c => c.text); }")
    assert active == [cues[1][1]] and "presentation" in active[0]
    page.mouse.move(5, 5)
    screenshot(page, "video-transcript")
