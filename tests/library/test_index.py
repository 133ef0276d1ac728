"""The library's full-text index on a real cache: text read by the real OCR engines in a made video, a PDF and an
image (English, Chinese, Japanese), answers, captions and chapters as the stages store them; hits with the right
file, time or page and snippet; filters; the index following the cache; a damaged index rebuilt."""

from __future__ import annotations

import io
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from core.analysis.chapters import Chapter, VideoSummary
from core.analysis.summary import CaptionChunk
from core.analysis.video_pipeline import analyze_video
from core.cache import ResultCache, make_key
from core.events import Event
from core.files import store_upload
from core.library import delete_item, record_file
from core.library.index import INDEX_NAME, LibraryIndex, make_snippet, match_query, store_listener
from core.ocr.pipeline import OcrOptions, run_ocr
from tests.pages.media import make_video

CJK_FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"  # index 2: Simplified Chinese, 0: Japanese


def _render(lines: list[str], font_index: int) -> Image.Image:
    if not Path(CJK_FONT).exists():
        pytest.skip(f"font {CJK_FONT} is missing (apt-get install fonts-noto-cjk)")
    font = ImageFont.truetype(CJK_FONT, 40, index=font_index)
    img = Image.new("RGB", (900, 80 + 70 * len(lines)), "white")
    draw = ImageDraw.Draw(img)
    for n, text in enumerate(lines):
        draw.text((40, 30 + n * 70), text, fill="black", font=font)
    return img


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A cache holding what the pages would leave: a video read for on-screen text (HELLO 42 from 2 s), with an
    answer, captions and chapters; a two-page PDF (English, then Chinese); a Japanese image. Each recorded."""
    tmp = tmp_path_factory.mktemp("library")
    cache = ResultCache(tmp / "cache")
    video = make_video(tmp / "made.mp4")
    v = store_upload(io.BytesIO(video.read_bytes()), "harbour-talk.mp4", tmp / "cache", 10**8)
    record_file(cache, v.sha256, v.name, v.kind, v.path, v.size_bytes)
    analyze_video(v.path, stages=("text",), cache=cache, input_hash=v.sha256)
    cache.put_json(make_key(v.sha256, "video.answers", {"q": "who"}), {
        "question": "Who opens the meeting?", "text": "Ms Okonkwo opens the meeting at 0:04.",
        "events": [Event("answer", 4.0, 4.5, "Ms Okonkwo opens the meeting").to_dict()]})
    chunk = CaptionChunk(0.0, 6.0, [Event("caption", 1.5, 3.0, "A red ferry leaves the quay").to_dict()])
    cache.put_json(make_key(v.sha256, "captions", {"start": 0.0}), asdict(chunk))
    summary = VideoSummary(6.0, [Chapter(0.0, 3.0, "Leaving port", "The ferry casts off."),
                                 Chapter(3.0, 6.0, "Open water", "Gulls follow the wake.")], "A short crossing.")
    cache.put_json(make_key(v.sha256, "chapters", {}), summary.to_dict())

    pdf_path = tmp / "scan.pdf"
    first = _render(["Delivery note 2026-11-05", "Total due 1,280.00"], 2)
    first.save(pdf_path, save_all=True, append_images=[_render(["增值税专用发票", "金额合计 壹仟贰佰捌拾元"], 2)])
    pdf = store_upload(io.BytesIO(pdf_path.read_bytes()), "vat-invoice.pdf", tmp / "cache", 10**8)
    record_file(cache, pdf.sha256, pdf.name, pdf.kind, pdf.path, pdf.size_bytes)
    run_ocr(pdf.path, OcrOptions(), name=pdf.name, cache=cache)

    buf = io.BytesIO()
    _render(["請求書", "株式会社サンプル 御中"], 0).save(buf, "PNG")
    jp = store_upload(io.BytesIO(buf.getvalue()), "seikyusho.png", tmp / "cache", 10**8)
    record_file(cache, jp.sha256, jp.name, jp.kind, jp.path, jp.size_bytes)
    run_ocr(jp.path, OcrOptions(), name=jp.name, cache=cache)
    yield {"cache": cache, "dir": tmp / "cache", "video": v, "pdf": pdf, "jp": jp}
    cache.close()


def test_text_read_in_a_video_is_found_at_its_time(library: dict) -> None:
    index = LibraryIndex(library["cache"], library["dir"])
    result = index.search("hello")
    [hit] = result.hits
    assert (hit.name, hit.kind, hit.stage_label) == ("harbour-talk.mp4", "video", "On-screen text")
    assert hit.start == pytest.approx(2.0, abs=1.0)  # the words are on screen from 2 s to 4 s
    assert "HELLO 42" in hit.snippet.text and [hit.snippet.text[a:b] for a, b in hit.snippet.marks] == ["HELLO"]
    assert hit.link_params() == {"file": library["video"].sha256, "t": f"{hit.start:g}"}
    assert (result.total, result.files, result.more) == (1, 1, False)

    [answer] = index.search("okonkwo").hits
    assert (answer.stage_label, answer.start) == ("Answers", 4.0) and "Ms Okonkwo opens the meeting" in answer.snippet.text
    [caption] = index.search("ferry quay").hits  # every word, in any order
    assert (caption.stage_label, caption.start, caption.snippet.text) == ("Captions", 1.5, "A red ferry leaves the quay")
    [chapter] = index.search("gulls").hits
    assert (chapter.stage_label, chapter.start) == ("Chapters", 3.0) and chapter.snippet.text.startswith("Open water")
    [name] = index.search("harbour").hits
    assert (name.stage_label, name.snippet.text, name.link_params()) == (
        "File name", "harbour-talk.mp4", {"file": library["video"].sha256})


def test_chinese_and_japanese_queries_find_their_page(library: dict) -> None:
    index = LibraryIndex(library["cache"], library["dir"])
    [hit] = index.search("发票").hits  # two characters inside a run written without spaces
    assert (hit.name, hit.stage_label, hit.page, hit.start) == ("vat-invoice.pdf", "OCR text", 2, None)
    assert hit.link_params() == {"file": library["pdf"].sha256, "page": "2"}
    assert "增值税专用发票" in hit.snippet.text
    assert [hit.snippet.text[a:b] for a, b in hit.snippet.marks] == ["发票"]
    assert [h.page for h in index.search("增值税专用发票").hits] == [2]
    assert [h.page for h in index.search("delivery note").hits] == [1]  # the English page of the same PDF
    [jp] = index.search("請求書").hits
    assert (jp.name, jp.page) == ("seikyusho.png", 1) and "請求書" in jp.snippet.text
    [jp2] = index.search("サンプル").hits  # katakana inside a line
    assert jp2.name == "seikyusho.png"
    assert index.search("发票 請求書").hits == []  # both words must be in the same place


def test_filters_by_kind_stage_and_date(library: dict) -> None:
    index = LibraryIndex(library["cache"], library["dir"])
    assert {h.name for h in index.search("a").hits} >= {"harbour-talk.mp4"}
    assert [h.name for h in index.search("note", kinds=["pdf"]).hits] == ["vat-invoice.pdf"]
    assert index.search("note", kinds=["video"]).hits == []
    meeting = index.search("meeting")
    assert {h.stage for h in meeting.hits} == {"video.answers"}
    assert index.search("meeting", stages=["captions", "chapters"]).hits == []
    assert [h.stage_label for h in index.search("ferry", stages=["captions"]).hits] == ["Captions"]
    now = time.time()
    assert index.search("請求書 OR").hits == []  # OR is a word to find here, not an operator
    assert [h.name for h in index.search("請求書", since=now - 3600, until=now + 3600).hits] == ["seikyusho.png"]
    assert index.search("請求書", until=now - 3600).hits == []
    items, total = index.items(kinds=["video"])
    assert total == 1 and items[0].name == "harbour-talk.mp4" and "On-screen text" in items[0].stages


def test_the_index_follows_the_cache(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    index = LibraryIndex(cache, tmp_path / "cache")
    sha = "ab" * 32
    cache.put_json(make_key(sha, "library.file", {}), {"name": "late.mp4", "kind": "video", "path": "", "size_bytes": 5,
                                                       "added_at": time.time(), "readable": True})
    assert index.search("xylophone").hits == []
    cache.put_json(make_key(sha, "video.text", {}), {"readings": [], "ocr_calls": 1, "spans": [
        {"start": 7.5, "end": 9.0, "text": "Xylophone solo", "score": 0.9, "samples": 2}]})
    [hit] = index.search("xylophone").hits  # stored after the last search: found by the next one
    assert (hit.name, hit.start) == ("late.mp4", 7.5)
    cache.put_json(make_key(sha, "video.text", {}), {"readings": [], "ocr_calls": 1, "spans": [
        {"start": 1.0, "end": 2.0, "text": "Trumpet solo", "score": 0.9, "samples": 2}]})  # the same result again
    assert index.search("xylophone").hits == [] and [h.start for h in index.search("trumpet").hits] == [1.0]
    delete_item(cache, sha)
    assert index.search("trumpet").hits == [] and index.items() == ([], 0)

    # another process (here: another index object on the same files) sees the same
    other = LibraryIndex(cache, tmp_path / "cache")
    cache.put_json(make_key(sha, "library.file", {}), {"name": "again.mp4", "kind": "video", "path": "",
                                                       "size_bytes": 5, "added_at": time.time(), "readable": True})
    assert [h.name for h in other.search("again").hits] == ["again.mp4"]
    assert [h.name for h in index.search("again").hits] == ["again.mp4"]

    # the Library page's Delete tells its index at once: nothing left for the next sync to find
    delete_item(cache, sha)
    assert index.forget_input(sha) == 1
    assert index.search("again", sync=False).hits == [] and index.sync().removed == 0
    assert [h.name for h in other.search("again").hits] == []  # the other one finds the removal itself


def test_on_stored_indexes_at_once_and_sync_does_not_read_it_again(tmp_path: Path, monkeypatch) -> None:
    cache = ResultCache(tmp_path / "cache")
    index = LibraryIndex(cache, tmp_path / "cache")
    sha = "cd" * 32
    record = {"name": "hooked.png", "kind": "image", "path": "", "size_bytes": 5, "added_at": time.time(),
              "readable": True}
    page = {"index": 0, "width": 10, "height": 10, "lines": [{"text": "Quarterly revenue grew"}]}
    for key, value in ((make_key(sha, "library.file", {}), record), (make_key(sha, "ocr-page", {"page": 0}), page)):
        cache.put_json(key, value)
        index.on_stored(key, value)  # what a store hook of the cache calls
    assert [h.page for h in index.search("revenue", sync=False).hits] == [1]
    reads: list[str] = []
    real = cache.get_json
    monkeypatch.setattr(cache, "get_json", lambda key: reads.append(str(key)) or real(key))
    assert index.sync().indexed == 0 and reads == []
    assert [h.name for h in index.search("revenue").hits] == ["hooked.png"]

    # the listener a store hook installs: indexed off the storing thread, soon after the store
    listener = store_listener(index)
    key, value = make_key(sha, "ocr-page", {"page": 1}), {"index": 1, "width": 10, "height": 10,
                                                         "lines": [{"text": "Tariff schedule"}]}
    cache.put_json(key, value)
    listener(key, value)
    deadline = time.monotonic() + 10
    while not index.search("tariff", sync=False).hits and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [h.page for h in index.search("tariff", sync=False).hits] == [2]
    assert reads == []


def test_a_damaged_index_is_reported_and_rebuilt(tmp_path: Path, caplog) -> None:
    cache = ResultCache(tmp_path / "cache")
    sha = "ef" * 32
    cache.put_json(make_key(sha, "library.file", {}), {"name": "kept.pdf", "kind": "pdf", "path": "", "size_bytes": 5,
                                                       "added_at": time.time(), "readable": True})
    cache.put_json(make_key(sha, "ocr-page", {"page": 3}), {"index": 3, "width": 1, "height": 1,
                                                             "lines": [{"text": "Tide tables for March"}]})
    first = LibraryIndex(cache, tmp_path / "cache")
    assert [h.page for h in first.search("tide").hits] == [4]
    first.close()
    (tmp_path / "cache" / INDEX_NAME).write_bytes(b"this is not a database" * 100)
    again = LibraryIndex(cache, tmp_path / "cache")
    assert [h.page for h in again.search("tide").hits] == [4]  # rebuilt from the cache
    assert len(again.problems) == 1 and "search index could not be read" in again.problems[0]
    assert "rebuilt from the stored results" in again.problems[0]
    assert again.rebuild().indexed == 2 and [h.page for h in again.search("march").hits] == [4]


def test_queries_are_text_and_snippets_are_plain(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    index = LibraryIndex(cache, tmp_path / "cache")
    sha = "12" * 32
    cache.put_json(make_key(sha, "library.file", {}), {"name": "x.png", "kind": "image", "path": "", "size_bytes": 1,
                                                       "added_at": time.time(), "readable": True})
    cache.put_json(make_key(sha, "ocr-page", {}), {"index": 0, "width": 1, "height": 1, "lines": [
        {"text": 'Sign <b>here</b> & "NEAR" the *stamp* <script>alert(1)</script> · Café Zoë'}]})
    for hostile in ('"', 'NEAR(a b)', "a*", "body:here", "^here", "AND", "(", "'; DROP TABLE fts; --", "  "):
        index.search(hostile)  # never an FTS5 syntax error
    [hit] = index.search('"near"').hits
    assert "<b>here</b>" in hit.snippet.text and "<script>" in hit.snippet.text  # shown as the characters they are
    assert [hit.snippet.text[a:b] for a, b in hit.snippet.marks] == ["NEAR"]
    [cafe] = index.search("cafe zoe").hits  # accents folded both ways
    assert [cafe.snippet.text[a:b] for a, b in cafe.snippet.marks] == ["Café", "Zoë"]
    assert match_query("  ") is None and match_query("发票") == '"发 票"' and match_query("deliv") == '"deliv"*'
    long = "word " * 200 + "needle here " + "word " * 200
    snip = make_snippet(long, "needle")
    assert len(snip.text) < 200 and snip.text.startswith("…") and snip.text.endswith("…")
    assert [snip.text[a:b] for a, b in snip.marks] == ["needle"]


def test_answers_of_a_conversation_are_found_at_their_time(tmp_path: Path) -> None:
    from core.app.conversations import ConversationStore, Turn

    cache = ResultCache(tmp_path / "cache")
    sha = "34" * 32
    cache.put_json(make_key(sha, "library.file", {}), {"name": "port.mp4", "kind": "video", "path": "", "size_bytes": 1,
                                                       "added_at": time.time(), "readable": True})
    store = ConversationStore(cache, "video")
    talk = store.current(sha)
    store.add_turn(talk, Turn("When does the crane move?", "The crane swings round at 0:42.",
                              events=[Event("answer", 42.0, 44.0, "The crane swings round").to_dict()]))
    [hit] = LibraryIndex(cache, tmp_path / "cache").search("crane swings").hits
    assert (hit.name, hit.stage_label, hit.start) == ("port.mp4", "Answers", 42.0)
    assert hit.snippet.text == "When does the crane move? The crane swings round at 0:42."
