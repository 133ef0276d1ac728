"""The question box for an image or PDF pages: a conversation per document (kept with the document's results; the
earlier questions and answers go to the model with each new one), the answer, the text read first (optional),
boxes on the page. The questions go to the runtime's document service (core.app.documents); this module only
renders."""

from __future__ import annotations

from typing import Any, Iterable

import streamlit as st

from core.analysis.documents import DocumentAnswer, draw_boxes, load_pages
from core.app import Runtime
from core.app.documents import answer_of
from core.ocr.types import OcrError
from core.vlm.base import EngineError
from ui.files import shown_text
from ui.model import model_ready
from ui.safe import plain, safe_markdown


def stream_answer(chunks: Iterable[str], box: Any, waiting: str = "Thinking…") -> str:
    """Show a streamed answer in `box` (an st.empty) piece by piece as it comes, sanitised Markdown with a cursor
    while it runs, then as it ended; returns the whole text. Every piece is drawn at once: redrawing at most every
    0.1 s (as ui.safe.stream_markdown does by default) showed a fast model's answer in lumps of dozens of tokens,
    and Streamlit itself merges redraws the browser has not received yet."""
    box.caption(waiting)
    text = ""
    for chunk in chunks:
        if not chunk:
            continue  # a token that completes no character yet
        text += chunk
        box.markdown(safe_markdown(text) + " ▌")
    box.markdown(safe_markdown(text) if text.strip() else "_(the model returned no text)_")
    return text


def ask_box(stored: Any, runtime: Runtime, total_pages: int, params: Any) -> None:
    """Render the "Ask about this document" section for the file `stored` (a core.files StoredFile)."""
    settings = runtime.settings
    documents = runtime.documents
    st.subheader("Ask about this document")
    st.caption("For example \"describe this\", \"extract the table\", or \"what does this button do?\" on a screenshot. "
               "Places the model points at are drawn on the page. Follow-up questions see the earlier ones.")
    if not model_ready(settings, "Questions about documents"):
        return
    sha = stored.sha256

    def _submit() -> None:
        question = str(st.session_state.get("doc_question") or "").strip()
        if question:
            st.session_state["doc_pending"] = (sha, question)
        st.session_state["doc_question"] = ""

    def _new_conversation() -> None:
        documents.new_conversation(sha)
        st.session_state.pop("doc_pending", None)

    cols = st.columns([3, 1, 1])
    question = cols[0].text_input("Question", key="doc_question", placeholder="What is the total of this invoice?",
                                  persist_state="session")
    pages = cols[1].text_input("Pages", value="1", key="doc_pages", disabled=total_pages <= 1,
                               help="1-based pages the model looks at, e.g. 1-2 (at most 8)")
    use_ocr = cols[2].toggle("Read the text first", key="doc_ocr",
                             help="Runs OCR and gives the text to the model as context: better on scans and invoices")
    talk = documents.conversation(sha)
    with st.container(horizontal=True):
        st.button("Ask", key="doc_ask", disabled=not question.strip(), icon=":material/send:", on_click=_submit,
                  type="primary")
        st.button("New conversation", key="doc_new_conversation", disabled=not talk.turns,
                  on_click=_new_conversation, icon=":material/add_comment:",
                  help="Start afresh: the model no longer sees the questions asked so far (they stay stored)")
    pending = st.session_state.pop("doc_pending", None)
    if pending is not None and pending[0] == sha:
        with st.spinner("The model is reading the page..."):
            try:
                documents.ask_turn(stored.path, sha, pending[1], pages=pages.strip() or "1", ocr=use_ocr,
                                   params=params)
            except (EngineError, OcrError) as exc:
                st.error(f"The question could not be answered: {shown_text(exc, stored)}")
        talk = documents.conversation(sha)
    if not talk.turns:
        return
    *earlier, last = talk.turns
    if earlier:
        with st.expander(f"Earlier in this conversation ({len(earlier)})"):
            for turn in earlier:
                with st.chat_message("user"):
                    st.text(turn.question)
                with st.chat_message("assistant"):
                    st.text(turn.answer or "(the model returned no text)")
    _answer(answer_of(last), stored, settings)


def _answer(answer: DocumentAnswer, stored: Any, settings: Any) -> None:
    """The latest answer: its question, text, what it looked at, notes and the places it pointed at."""
    st.markdown("**Answer**")
    st.caption(f"To: {plain(answer.question)}")
    st.text(answer.text or "(the model returned no text)")
    meta = f"{answer.seconds:.1f} s · pages {', '.join(str(p + 1) for p in answer.pages)}"
    if answer.ocr_used:
        meta += f" · {answer.ocr_chars} characters of OCR text given as context"
    st.caption(meta)
    for w in answer.warnings:
        st.caption(f"Note: {plain(w)}")
    if answer.boxes:
        st.caption(f"{len(answer.boxes)} place(s) the model pointed at:")
        for index, image in load_pages(stored.path, ",".join(str(p + 1) for p in answer.pages),
                                       max_pixels=settings.max_image_pixels, settings=settings):
            if any(b.page == answer.pages.index(index) for b in answer.boxes):
                st.image(draw_boxes(image, answer.boxes, page=answer.pages.index(index)),
                         caption=f"page {index + 1}")
        st.dataframe([{"page": answer.pages[b.page] + 1, "label": b.label, "x1": round(b.x1), "y1": round(b.y1),
                       "x2": round(b.x2), "y2": round(b.y2)} for b in answer.boxes], hide_index=True)
