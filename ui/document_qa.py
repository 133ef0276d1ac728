"""The question box for an image or PDF pages: the answer, the text read first (optional), boxes on the page.
The question goes to the runtime's document service (core.app.documents); this module only renders."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.analysis.documents import draw_boxes, load_pages
from core.app import Runtime
from core.ocr.types import OcrError
from core.vlm.base import EngineError
from ui.model import model_ready
from ui.safe import plain


def ask_box(stored: Any, runtime: Runtime, total_pages: int, params: Any) -> None:
    """Render the "Ask about this document" section for the file `stored` (a core.files StoredFile)."""
    settings = runtime.settings
    st.subheader("Ask about this document")
    st.caption("For example \"describe this\", \"extract the table\", or \"what does this button do?\" on a screenshot. "
               "Places the model points at are drawn on the page.")
    if not model_ready(settings, "Questions about documents"):
        return
    cols = st.columns([3, 1, 1])
    question = cols[0].text_input("Question", key="doc_question", placeholder="What is the total of this invoice?")
    pages = cols[1].text_input("Pages", value="1", key="doc_pages", disabled=total_pages <= 1,
                               help="1-based pages the model looks at, e.g. 1-2 (at most 8)")
    use_ocr = cols[2].toggle("Read the text first", key="doc_ocr",
                             help="Runs OCR and gives the text to the model as context: better on scans and invoices")
    key = f"doc_answer:{stored.sha256}"
    if st.button("Ask", key="doc_ask", disabled=not question.strip(), icon=":material/send:"):
        with st.spinner("The model is reading the page..."):
            try:
                st.session_state[key] = runtime.documents.ask(stored.path, question.strip(),
                                                              pages=pages.strip() or "1", ocr=use_ocr, params=params)
            except (EngineError, OcrError) as exc:
                st.error(f"The question could not be answered: {plain(exc)}")
                return
    answer = st.session_state.get(key)
    if answer is None:
        return
    st.markdown("**Answer**")
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
