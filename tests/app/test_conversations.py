"""Conversations of the application layer (core/app/conversations.py and the video and document services): turns
kept as JSON in the result cache under the file's hash, earlier turns given to the model within a token budget
(the oldest left out first, and the answer says so), a new conversation keeping the old one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.app import Runtime
from core.app.conversations import Conversation, ConversationStore, Turn, estimate_tokens
from core.cache import ResultCache, hash_file
from core.jobs import JobRegistry
from core.media import SamplingPlan
from core.settings import Settings
from core.vlm.types import GenerationParams
from tests.pages.media import make_video, text_image

SHA = "c0ffee" * 10 + "abcd"


@pytest.fixture()
def cache(tmp_path: Path):
    c = ResultCache(tmp_path / "cache")
    yield c
    c.close()


def _words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


def test_history_keeps_the_newest_turns_that_fit_and_says_how_many_were_left_out() -> None:
    talk = Conversation(SHA, "video", "t1", turns=[
        Turn("first question?", _words(300, "alpha")), Turn("second question?", _words(300, "beta")),
        Turn("third question?", _words(300, "gamma")), Turn("fourth question?", _words(20, "delta"))])
    count = len  # one token per character: sizes exact for the test
    whole = talk.history(budget_tokens=100_000, count=count)
    assert whole.kept == 4 and whole.dropped == 0 and whole.note() is None
    assert [m.role for m in whole.messages] == ["user", "assistant"] * 4
    assert whole.messages[0].parts()[0].text == "first question?"  # oldest first, in the conversation's order

    # room for the last two turns only: the two oldest are left out, and the note says so in plain words
    budget = sum(len(t.question) + len(t.answer) + 10 for t in talk.turns[2:])
    part = talk.history(budget_tokens=budget, count=count)
    assert (part.kept, part.dropped) == (2, 2) and part.tokens == budget
    assert part.messages[0].parts()[0].text == "third question?"
    assert part.messages[-1].content == _words(20, "delta")
    note = part.note()
    assert note is not None and "oldest 2 questions and answers were left out" in note
    assert f"{budget:,} tokens" in note and "the last 2" in note
    # a budget below the newest turn: nothing given, and said
    none = talk.history(budget_tokens=5, count=count)
    assert none.kept == 0 and none.messages == [] and "none of the earlier ones" in (none.note() or "")


def test_the_token_estimate_counts_chinese_per_character_and_english_per_four_bytes() -> None:
    assert estimate_tokens("视频里发生了什么") == 8
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("") == 0


def test_turns_are_stored_as_json_under_the_files_hash_and_a_new_conversation_keeps_the_old(
        cache: ResultCache, tmp_path: Path) -> None:
    store = ConversationStore(cache, "video")
    talk = store.current(SHA)
    assert talk.turns == []
    talk = store.add_turn(talk, Turn("What happens at 0:03?", "A car passes.",
                                     events=[{"start": 3.0, "end": 3.0, "kind": "answer", "label": "0:03"}]))
    again = ConversationStore(ResultCache(tmp_path / "cache"), "video").current(SHA)  # another process
    assert [t.question for t in again.turns] == ["What happens at 0:03?"]
    assert [e.start for e in again.turns[0].answer_events()] == [3.0]
    assert [e.stage for e in cache.entries(SHA)] == ["video.conversation", "video.conversation"]
    # kept as JSON (the cache's JSON entries; the conversation is plain data, nothing pickled)
    stored = cache.get_json(store._key(SHA, talk.id))
    assert json.loads(json.dumps(stored)) == talk.to_dict()
    assert stored["turns"][0]["answer"] == "A car passes."

    fresh = store.start_new(SHA)
    assert store.current(SHA).id == fresh.id and store.current(SHA).turns == []
    assert [t.answer for t in store.get(SHA, talk.id).turns] == ["A car passes."]  # the old one stays
    # documents keep their own conversations
    assert ConversationStore(cache, "document").current(SHA).turns == []


def test_two_tabs_asking_at_once_both_keep_their_turns(cache: ResultCache) -> None:
    store = ConversationStore(cache, "document")
    tab_a = store.current(SHA)
    tab_b = store.current(SHA)  # both opened before either asked
    store.add_turn(tab_a, Turn("total?", "99.50"))
    store.add_turn(tab_b, Turn("date?", "2024-05-01"))
    assert [t.question for t in store.current(SHA).turns] == ["total?", "date?"]


def test_a_follow_up_question_gives_the_earlier_turns_to_the_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    rt = Runtime(Settings(model=str(tiny_model_dir), cache_dir=tmp_path / "cache"),
                 cache=ResultCache(tmp_path / "cache"), jobs=JobRegistry())
    try:
        video = make_video(tmp_path / "v.mp4", seconds=4)
        sha = hash_file(video)
        plan = SamplingPlan(fps=1.0, max_frames=4)
        greedy = GenerationParams(max_new_tokens=12, temperature=0.0)

        def turn(question: str, **kw) -> object:
            qa = rt.video.questions(video, plan, sha)
            for _ in rt.video.stream_turn(qa, sha, question, greedy, refine=False, **kw):
                pass
            return qa.last_result

        def prompt_tokens() -> int:
            return rt.engine.ledger.records()[-1].prompt_tokens

        turn("Describe the video")
        alone = prompt_tokens()
        second = turn("And the colours?")
        with_one = prompt_tokens()
        talk = rt.video.conversation(sha)
        assert [t.question for t in talk.turns] == ["Describe the video", "And the colours?"]
        first_turn = talk.turns[0]
        tok = rt.engine.processor.tokenizer
        given = len(tok.encode(first_turn.question + first_turn.answer, add_special_tokens=False))
        # the second request held the first turn: its question, its answer and the chat markers around them
        assert with_one - alone >= given
        assert second.reused_prefix  # the earlier turns sit after the video: its kept prefix still serves
        assert talk.turns[1].detail["history_turns"] == 1 and talk.turns[1].detail["history_dropped"] == 0

        # a small budget: the oldest turn is left out and the answer says so
        third = turn("Anything else?", budget_tokens=len(tok.encode(talk.turns[1].question + talk.turns[1].answer,
                                                                    add_special_tokens=False)) + 12)
        assert "oldest question and its answer was left out" in third.warnings[0]
        assert rt.video.conversation(sha).turns[2].detail["history_dropped"] == 1

        # a new conversation: nothing earlier is given
        rt.video.new_conversation(sha)
        turn("Describe the video")
        assert prompt_tokens() == alone
        # the CLI's path (`ask` with a conversation) adds to the current one
        rt.video.ask(video, "Who is there?", greedy, plan, sha, refine=False, conversation=True)
        assert [t.question for t in rt.video.conversation(sha).turns] == ["Describe the video", "Who is there?"]
    finally:
        rt.cache.close()
        rt.close()


def test_a_documents_follow_up_sees_the_earlier_turns(tiny_model_dir: Path, tmp_path: Path) -> None:
    rt = Runtime(Settings(model=str(tiny_model_dir), cache_dir=tmp_path / "cache"),
                 cache=ResultCache(tmp_path / "cache"), jobs=JobRegistry())
    try:
        page = tmp_path / "invoice.png"
        page.write_bytes(text_image(["Invoice 4711", "Total 99.50 EUR"]))
        sha = hash_file(page)
        greedy = GenerationParams(max_new_tokens=8, temperature=0.0)
        rt.documents.ask_turn(page, sha, "What is the total?", params=greedy)
        alone = rt.engine.ledger.records()[-1].prompt_tokens
        answer = rt.documents.ask_turn(page, sha, "And the invoice number?", params=greedy)
        talk = rt.documents.conversation(sha)
        assert [t.question for t in talk.turns] == ["What is the total?", "And the invoice number?"]
        assert rt.engine.ledger.records()[-1].prompt_tokens > alone + 5
        assert talk.turns[1].answer == answer.text and talk.turns[1].detail["pages"] == [0]
    finally:
        rt.cache.close()
        rt.close()
