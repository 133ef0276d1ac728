"""Document workflows, the same for the dashboard, the CLI and the API: read (OCR) and ask.

Reading goes through the runtime's result cache (every page stored as it is read), with the runtime's
settings and OCR engines, whose model entry is the runtime's one engine: an OCR run with Qwen3-VL and
a question about the same page share one set of weights and one request ledger.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.analysis.documents import Box, DocumentAnswer, ask_document
from core.events import CancelToken, Progress
from core.ocr.pipeline import OcrOptions, run_ocr
from core.ocr.types import OcrResult

if TYPE_CHECKING:  # pragma: no cover - typing only
    from core.app.context import AppContext
    from core.app.conversations import Conversation, ConversationStore, Turn
    from core.vlm.types import GenerationParams, Message


class DocumentService:
    """Read documents into text, tables and fields, and answer questions about their pages."""

    def __init__(self, runtime: "AppContext") -> None:
        self.runtime = runtime

    def read(self, source: str | Path | bytes, options: OcrOptions | None = None, *, name: str | None = None,
             progress: Progress | None = None, cancel: CancelToken | None = None) -> OcrResult:
        """OCR a PDF or image (path or bytes) through the result cache; pages already read come from it.

        Raises OcrError (bad file, missing engine, page limit; the message names the fix), OcrBusy
        when other heavy work holds the memory, SettingsError / CacheUnavailable when the cache cannot open.
        """
        rt = self.runtime
        return run_ocr(source, options, name=name, settings=rt.settings, cache=rt.cache, engines=rt.ocr,
                       progress=progress, cancel=cancel)

    def ask(self, path: str | Path, question: str, pages: str | None = "1", ocr: bool = False,
            params: "GenerationParams | None" = None) -> DocumentAnswer:
        """Answer `question` about an image or PDF pages with the runtime's engine; with `ocr`, the text read
        first (through the cache) is given as context. Raises EngineError / OcrError with the fix."""
        rt = self.runtime
        return ask_document(rt.engine, path, question, pages=pages, ocr=ocr, params=params, settings=rt.settings,
                            read=lambda src, options: self.read(src, options))

    # ------------------------------------------------------------------ conversations
    @property
    def conversations(self) -> "ConversationStore":
        """The documents' conversations, kept in the result cache by content hash."""
        from core.app.conversations import ConversationStore

        return ConversationStore(self.runtime.cache, "document")

    def conversation(self, input_hash: str) -> "Conversation":
        """The document's current conversation (empty when nothing was asked yet)."""
        return self.conversations.current(input_hash)

    def new_conversation(self, input_hash: str) -> "Conversation":
        """Start a new conversation about the document (the earlier one stays stored)."""
        return self.conversations.start_new(input_hash)

    def ask_turn(self, path: str | Path, input_hash: str, question: str, pages: str | None = "1", ocr: bool = False,
                 params: "GenerationParams | None" = None, budget_tokens: int | None = None) -> DocumentAnswer:
        """One turn of the document's current conversation: the earlier turns (the newest that fit `budget_tokens`,
        default `HISTORY_TOKENS`) go to the model before the pages and the question; the turn is stored. When older
        turns were left out, the answer's first warning says so. Raises EngineError / OcrError with the fix."""
        from core.app.conversations import HISTORY_TOKENS, Turn, estimate_tokens, tokenizer_counter

        rt = self.runtime
        engine = rt.engine
        count = estimate_tokens
        if getattr(engine, "loaded", False) and getattr(getattr(engine, "processor", None), "tokenizer", None):
            count = tokenizer_counter(engine.processor.tokenizer)
        talk = self.conversation(input_hash)
        history = talk.history(budget_tokens or HISTORY_TOKENS, count)
        answer = ask_document(WithHistory(engine, history.messages), path, question, pages=pages, ocr=ocr,
                              params=params, settings=rt.settings, read=lambda src, options: self.read(src, options))
        note = history.note()
        if note:
            answer.warnings.insert(0, note)
        self.conversations.add_turn(talk, Turn(
            question=question.strip(), answer=answer.text, seconds=answer.seconds, warnings=list(answer.warnings),
            detail={"pages": answer.pages, "ocr_used": answer.ocr_used, "ocr_chars": answer.ocr_chars,
                    "boxes": [asdict(b) for b in answer.boxes], "history_turns": history.kept,
                    "history_dropped": history.dropped}))
        return answer


def answer_of(turn: "Turn") -> DocumentAnswer:
    """The DocumentAnswer a stored turn holds (to show its boxes again)."""
    d = turn.detail
    boxes = []
    for b in d.get("boxes") or []:
        try:
            boxes.append(Box(**b))
        except TypeError:
            continue
    return DocumentAnswer(question=turn.question, text=turn.answer, boxes=boxes,
                          pages=[int(p) for p in d.get("pages") or []], ocr_used=bool(d.get("ocr_used")),
                          ocr_chars=int(d.get("ocr_chars") or 0), seconds=turn.seconds, warnings=list(turn.warnings))


class WithHistory:
    """The engine with earlier turns put before each request's own messages (after any system message), for
    workflows that build a single user turn (`ask_document`); everything else is the engine's."""

    def __init__(self, engine: Any, history: "list[Message]") -> None:
        self._engine = engine
        self._history = list(history)

    def _with(self, messages: "list[Message]") -> "list[Message]":
        if not self._history:
            return messages
        system = [m for m in messages if m.role == "system"]
        return system + self._history + [m for m in messages if m.role != "system"]

    def generate(self, messages: "list[Message]", params: Any = None, kind: str = "chat") -> Any:
        return self._engine.generate(self._with(messages), params, kind=kind)

    def stream(self, messages: "list[Message]", params: Any = None, kind: str = "chat") -> Any:
        return self._engine.stream(self._with(messages), params, kind=kind)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)
