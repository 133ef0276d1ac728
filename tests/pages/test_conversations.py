"""Conversations on the Video Q&A and OCR pages with the tiny model: each answer shown once, in order, the box
emptied for the next question; answer times are buttons that move the player; "New conversation" starts afresh;
earlier turns left out for the budget are said; a document keeps its conversation too."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.app.conversations import ConversationStore, Turn
from core.cache import ResultCache
from tests.pages.conftest import page
from tests.pages.media import text_image


@pytest.fixture
def with_model(app_env: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> Path:
    monkeypatch.setenv("VLSCOPE_MODEL", str(tiny_model_dir))
    return app_env


def _video_page(video_bytes: bytes) -> AppTest:
    at = AppTest.from_file(page("video"), default_timeout=120).run()
    at.file_uploader(key="video_upload").set_value(("cuts.mp4", video_bytes, "video/mp4")).run()
    assert not at.exception, at.exception
    at.number_input(key="gen_max_new_tokens").set_value(6).run()
    at.slider(key="gen_temperature").set_value(0.0).run()
    at.toggle(key="video_refine").set_value(False).run()
    return at


def _ask(at: AppTest, question: str, key: str = "video") -> AppTest:
    at.text_input(key=f"{key}_question").input(question).run()
    at.button(key=f"{key}_ask").click().run()
    assert not at.exception, at.exception
    return at


def _seed(app_env: Path, sha: str, kind: str, *turns: Turn) -> None:
    """Turns stored before this session (another tab, an earlier day), as the service stores them."""
    cache = ResultCache(app_env / "cache")
    try:
        store = ConversationStore(cache, kind)
        talk = store.current(sha)
        for t in turns:
            talk = store.add_turn(talk, t)
    finally:
        cache.close()


def test_each_answer_is_shown_once_in_order_and_the_box_empties(with_model: Path, video_bytes: bytes) -> None:
    at = _video_page(video_bytes)
    _ask(at, "Describe the video")
    assert at.text_input(key="video_question").value == ""  # ready for the follow-up
    _ask(at, "And the colours?")
    asked = [c.value for c in at.caption if c.value.startswith("Answer to: ")]
    assert asked == ["Answer to: Describe the video", "Answer to: And the colours?"]
    assert len(at.chat_message) == 2
    # the last answer once: in its bubble, not again as plain text under it (the old duplicate)
    sha = hashlib.sha256(video_bytes).hexdigest()
    cache = ResultCache(with_model / "cache")
    try:
        last = ConversationStore(cache, "video").current(sha).turns[-1]
    finally:
        cache.close()
    assert not any(t.value == last.answer for t in at.text)
    assert sum(1 for m in at.chat_message[1].markdown if "Answer to" not in m.value) == 1
    # what the answer cost is shown for the newest answer only
    assert sum("frames seen" in c.value for c in at.caption) == 1
    assert any("Conversation about cuts.mp4: 2 question(s)" in c.value for c in at.caption)

    # a new conversation: the bubbles go, the model no longer sees them
    at.button(key="video_new_conversation").click().run()
    assert not at.chat_message and at.button(key="video_new_conversation").disabled
    _ask(at, "What happens at 0:03?")
    assert [c.value for c in at.caption if c.value.startswith("Answer to: ")] == ["Answer to: What happens at 0:03?"]


def test_answer_times_are_buttons_that_move_the_player(with_model: Path, video_bytes: bytes) -> None:
    sha = hashlib.sha256(video_bytes).hexdigest()
    _seed(with_model, sha, "video",
          Turn("When does the text appear?", "At 0:02 the words appear, and they go at 0:04.",
               events=[{"start": 2.0, "end": 2.0, "kind": "answer", "label": "0:02"},
                       {"start": 4.0, "end": 4.0, "kind": "answer", "label": "0:04"}],
               detail={"frames_seen": 12}))
    at = _video_page(video_bytes)
    assert at.get("video")[0].proto.start_time == 0
    times = [b for b in at.button if b.label.startswith("▶ ")]
    assert [b.label for b in times] == ["▶ 0:02.0", "▶ 0:04.0"]
    times[1].click().run()
    assert not at.exception, at.exception
    assert at.get("video")[0].proto.start_time == 4
    assert any(c.value.startswith("Player set to 0:04") for c in at.caption)


def test_a_long_conversation_leaves_the_oldest_turns_out_and_says_so(with_model: Path, video_bytes: bytes) -> None:
    sha = hashlib.sha256(video_bytes).hexdigest()
    long_answer = " ".join(["the scene changes again and again"] * 400)  # well over the budget of 2,048 tokens
    _seed(with_model, sha, "video", Turn("Tell me everything", long_answer), Turn("Shorter?", "Three shots."))
    at = _video_page(video_bytes)
    _ask(at, "And now?")
    notes = [c.value for c in at.caption if "left out" in c.value]
    assert len(notes) == 1 and "oldest question and its answer was left out" in notes[0]
    assert "2,048 tokens" in notes[0] and "the last 1" in notes[0]


def test_a_document_keeps_its_conversation(with_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLSCOPE_MAX_NEW_TOKENS", "8")
    at = AppTest.from_file(page("ocr"), default_timeout=120).run()
    png = text_image(["Invoice 4711", "Total 99.50 EUR"])
    at.file_uploader(key="ocr_upload").set_value(("invoice.png", png, "image/png")).run()
    _ask(at, "What is the total?", key="doc")
    assert [m.value for m in at.markdown].count("**Answer**") == 1
    assert at.text_input(key="doc_question").value == ""
    _ask(at, "And the invoice number?", key="doc")
    assert [m.value for m in at.markdown].count("**Answer**") == 1
    assert any(c.value == "To: And the invoice number?" for c in at.caption)
    earlier = [e for e in at.expander if e.label.startswith("Earlier in this conversation")]
    assert [e.label for e in earlier] == ["Earlier in this conversation (1)"]
    assert earlier[0].text[0].value == "What is the total?"
    at.button(key="doc_new_conversation").click().run()
    assert not any(m.value == "**Answer**" for m in at.markdown)


class Box:
    """What an st.empty offers the streaming, with every redraw kept."""

    def __init__(self) -> None:
        self.drawn: list[str] = []

    def caption(self, text: str) -> None:
        self.drawn.append(f"caption: {text}")

    def markdown(self, text: str) -> None:
        self.drawn.append(text)


def test_a_streamed_answer_is_redrawn_for_every_piece(tiny_engine) -> None:
    from core.vlm.types import GenerationParams, user
    from ui.document_qa import stream_answer
    from ui.safe import safe_markdown

    pieces: list[str] = []

    def recorded():
        with tiny_engine.stream([user("Describe a cat")], GenerationParams(max_new_tokens=60)) as stream:
            for chunk in stream:
                pieces.append(chunk)
                yield chunk

    box = Box()
    text = stream_answer(recorded(), box, waiting="Looking at the video…")
    shown = [p for p in pieces if p]
    assert text == "".join(pieces) and len(shown) >= 5
    assert box.drawn[0] == "caption: Looking at the video…"
    # one redraw per piece as it came (with the cursor), then the answer as it ended: never two pieces at once
    assert box.drawn[1:-1] == [safe_markdown("".join(shown[:i + 1])) + " ▌" for i in range(len(shown))]
    assert box.drawn[-1] == safe_markdown(text)
