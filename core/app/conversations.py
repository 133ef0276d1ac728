"""Conversations about one file: the questions asked about a video (or a document) and their answers, kept in the
result cache (JSON) under the file's content hash, and the earlier turns given back to the model within a token
budget (the oldest left out first, and the answer says so).

    store = ConversationStore(cache, "video")
    talk = store.current(input_hash)              # the file's current conversation (empty when none yet)
    history = talk.history(budget_tokens=2048)     # the earlier turns as chat messages, newest kept first
    ... ask with history.messages ...
    talk = store.add_turn(talk, Turn(question, answer, events=...))
    talk = store.start_new(input_hash)            # "New conversation": the old one stays stored

The pages only render `Conversation.turns`; the video and document services (core/app) add the turns.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from core.cache import make_key
from core.events import Event
from core.vlm.types import Message, user

HISTORY_TOKENS = 2048
"""Most tokens of earlier turns given back to the model with a new question (about 1,500 words)."""
TURN_OVERHEAD_TOKENS = 10
"""Tokens a question-and-answer pair costs beyond its text (the chat template's role markers)."""
KINDS = ("video", "document")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_LOCK = threading.Lock()


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate of the tokens of `text`: one per CJK character, one per 4 bytes of the rest
    (Qwen's tokenizer averages about 4 characters per token on English text; this errs on the high side)."""
    cjk = len(_CJK.findall(text))
    rest = len(_CJK.sub("", text).encode("utf-8"))
    return cjk + -(-rest // 4)


def tokenizer_counter(tokenizer: Any) -> Callable[[str], int]:
    """A token counter over a transformers tokenizer (exact counts for the loaded model)."""
    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    return count


@dataclass
class Turn:
    """One question and its answer.

    events: the times the answer names (answer events, JSON dicts); detail: what else the page shows about it
    (frames seen, pages looked at, boxes...); warnings: notes for the user (e.g. earlier turns left out).
    """

    question: str
    answer: str
    events: list[dict[str, Any]] = field(default_factory=list)
    at: float = field(default_factory=time.time)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def answer_events(self) -> list[Event]:
        """The times the answer names, as events (for the timeline and the seek buttons)."""
        out = []
        for e in self.events:
            try:
                out.append(Event.from_dict(e))
            except (TypeError, ValueError, KeyError):
                continue  # an entry written by an older version: left out
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Turn":
        return cls(question=str(data.get("question", "")), answer=str(data.get("answer", "")),
                   events=list(data.get("events") or []), at=float(data.get("at") or 0.0),
                   seconds=float(data.get("seconds") or 0.0), warnings=[str(w) for w in data.get("warnings") or []],
                   detail=dict(data.get("detail") or {}))


@dataclass
class History:
    """The earlier turns given to the model: `messages` (user, assistant, user, ...), how many turns were kept and
    left out, and the tokens they take."""

    messages: list[Message]
    kept: int
    dropped: int
    tokens: int
    budget: int

    def note(self) -> str | None:
        """What the user reads when earlier turns were left out (None when every turn was given)."""
        if not self.dropped:
            return None
        turns = "question and its answer was" if self.dropped == 1 else f"{self.dropped} questions and answers were"
        kept = (f"the model saw the last {self.kept}" if self.kept else "the model saw none of the earlier ones")
        return (f"This conversation is long: its oldest {turns} left out so the rest fits the model's budget of "
                f"{self.budget:,} tokens ({kept}). Start a new conversation for a fresh topic.")


@dataclass
class Conversation:
    """The turns of one conversation about one file (`kind`: "video" or "document")."""

    input_hash: str
    kind: str
    id: str
    started_at: float = field(default_factory=time.time)
    turns: list[Turn] = field(default_factory=list)

    def history(self, budget_tokens: int = HISTORY_TOKENS, count: Callable[[str], int] | None = None) -> History:
        """The earlier turns as chat messages, the newest first kept, within `budget_tokens` (oldest left out)."""
        count = count or estimate_tokens
        kept: list[Turn] = []
        used = 0
        for turn in reversed(self.turns):
            cost = count(turn.question) + count(turn.answer) + TURN_OVERHEAD_TOKENS
            if used + cost > budget_tokens:
                break  # this one and every older one are left out: the conversation keeps its order
            kept.insert(0, turn)
            used += cost
        messages: list[Message] = []
        for turn in kept:
            messages.append(user(turn.question))
            messages.append(Message("assistant", turn.answer))
        return History(messages, len(kept), len(self.turns) - len(kept), used, budget_tokens)

    def events(self) -> list[Event]:
        """Every time named by the answers, oldest turn first."""
        return [e for t in self.turns for e in t.answer_events()]

    def to_dict(self) -> dict[str, Any]:
        return {"input_hash": self.input_hash, "kind": self.kind, "id": self.id, "started_at": self.started_at,
                "turns": [t.to_dict() for t in self.turns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Conversation":
        return cls(input_hash=str(data["input_hash"]), kind=str(data.get("kind", "video")), id=str(data["id"]),
                   started_at=float(data.get("started_at") or 0.0),
                   turns=[Turn.from_dict(t) for t in data.get("turns") or [] if isinstance(t, dict)])


class ConversationStore:
    """Conversations of one kind ("video" or "document") in the result cache, one current per file.

    Each conversation is one JSON entry (stage "<kind>.conversation"); a small pointer entry of the same stage names
    the file's current one. Turns are appended under the cache's lock for the file, re-reading the stored
    conversation first, so two tabs (or processes) asking at once both keep their turns.
    """

    def __init__(self, cache: Any, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"conversation kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.cache = cache
        self.kind = kind
        self.stage = f"{kind}.conversation"

    def _key(self, input_hash: str, conversation_id: str) -> Any:
        return make_key(input_hash, self.stage, {"id": conversation_id})

    def _pointer(self, input_hash: str) -> Any:
        return make_key(input_hash, self.stage, {"current": True})

    def get(self, input_hash: str, conversation_id: str) -> Conversation | None:
        """One stored conversation, or None (never stored, evicted, or unreadable)."""
        data = self.cache.get_json(self._key(input_hash, conversation_id))
        if not isinstance(data, dict):
            return None
        try:
            return Conversation.from_dict(data)
        except (KeyError, TypeError, ValueError):
            return None

    def current(self, input_hash: str) -> Conversation:
        """The file's current conversation: the stored one, or a new empty one (stored once it has a turn)."""
        pointer = self.cache.get_json(self._pointer(input_hash))
        if isinstance(pointer, dict) and pointer.get("id"):
            found = self.get(input_hash, str(pointer["id"]))
            if found is not None:
                return found
            return Conversation(input_hash, self.kind, str(pointer["id"]))
        return Conversation(input_hash, self.kind, input_hash[:12])  # the file's first conversation

    def start_new(self, input_hash: str) -> Conversation:
        """A new, empty conversation becomes the file's current one; the previous one stays stored."""
        talk = Conversation(input_hash, self.kind, uuid.uuid4().hex[:12])
        self.cache.put_json(self._pointer(input_hash), {"id": talk.id, "started_at": talk.started_at})
        return talk

    def add_turn(self, talk: Conversation, turn: Turn) -> Conversation:
        """Append `turn` to the stored conversation `talk` (turns stored meanwhile by others are kept) and make it
        the file's current one; returns the conversation as stored."""
        with _LOCK, self.cache.lock(talk.input_hash, self.stage):
            stored = self.get(talk.input_hash, talk.id) or Conversation(talk.input_hash, self.kind, talk.id,
                                                                        talk.started_at)
            stored.turns.append(turn)
            self.cache.put_json(self._key(talk.input_hash, talk.id), stored.to_dict())
            self.cache.put_json(self._pointer(talk.input_hash), {"id": talk.id, "started_at": stored.started_at})
        return stored


__all__ = ["Conversation", "ConversationStore", "HISTORY_TOKENS", "History", "Turn", "estimate_tokens",
           "tokenizer_counter"]
