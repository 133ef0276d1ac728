"""OCR: read an image or PDF into text, tables and invoice fields; see what preprocessing did; export it all.
Reading is the runtime's document service (core.app.documents) run as a background job; this page keeps
the widgets and the rendering.

A short read (one page, a photo) is waited for right after "Read text" and shown in the same run; a longer
one shows the job's progress and the page redraws when it ends. The preprocessing preview is worked out only
while its section is open."""

from __future__ import annotations

import hashlib
import json
import threading

import pandas as pd
import streamlit as st

from core.jobs import JobState
from core.ocr.exports import FORMATS, export, to_markdown
from core.ocr.loading import count_pages, is_pdf, iter_pages
from core.ocr.pipeline import OcrOptions, preview_preprocessing
from core.ocr.scripts import LANGUAGES
from core.ocr.types import OcrError, OcrResult
from ui.document_qa import ask_box
from ui.files import pick_file, shown_text
from ui.jobs import job_panel
from ui.model import model_ready
from ui.ocr_view import boxes_figure, field_rows, fields_figure
from ui.safe import plain, shown
from ui.state import get_cache, get_runtime, settings_or_stop, sidebar_generation_params

MIME = {"txt": "text/plain", "md": "text/markdown", "json": "application/json", "csv": "text/csv",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "pdf": "application/pdf",
        "html": "text/html"}
FORMAT_NAMES = {"txt": "Text", "md": "Markdown", "json": "JSON", "csv": "CSV (tables, fields)", "xlsx": "Excel",
                "pdf": "Searchable PDF", "html": "HTML tables"}
ENGINE_NAMES = {"auto": "Auto (best for the language)", "rapidocr": "RapidOCR", "tesseract": "Tesseract",
                "vlm": "Qwen3-VL (model)"}
# how long the page waits for a read right after "Read text" before it shows the job's progress instead
INLINE_WAIT_S = 4.0
# the start of the page warning that the page's own sentence on the text layer says instead
TEXT_LAYER_NOTE = "this page has a real text layer"



@st.cache_resource(show_spinner=False)
def _warm_ocr_engine(_engines) -> threading.Thread:
    """Read one small rendered word in the background once per server process, while the user picks a file:
    RapidOCR loads its models and runs its first, slow inference then, not in the user's first "Read text"
    (measured: a first one-page read 3.4 s cold, 1.1 s after this)."""
    import cv2
    import numpy as np

    from core.ocr.pipeline import ocr_image

    def load() -> None:
        word = np.full((64, 360, 3), 255, np.uint8)
        cv2.putText(word, "Total 120.00", (10, 45), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
        try:
            ocr_image(word, OcrOptions(engine="rapidocr", tables=False), engines=_engines)
        except Exception:  # noqa: BLE001 - a missing engine is said when reading, with its fix
            pass

    thread = threading.Thread(target=load, name="warm-rapidocr", daemon=True)
    thread.start()
    return thread


settings = settings_or_stop()
params = sidebar_generation_params()
runtime = get_runtime()
get_cache()  # the shared result cache opens now: one that cannot stops the page with its fix
_warm_ocr_engine(runtime.ocr)
st.title("OCR")
st.write("Read the text of an image or a PDF: lines with their boxes, tables as grids, invoice and receipt fields "
         "with their checks, and exports. Runs on the CPU with RapidOCR or Tesseract; the model is optional.")

stored = pick_file("document", "ocr")
if stored is None:
    st.info("Upload an image (PNG, JPEG, TIFF, WebP...) or a PDF to start.")
    st.stop()

try:
    total = count_pages(stored.path)
    with open(stored.path, "rb") as fh:
        pdf = is_pdf(fh.read(1024))
except (OcrError, OSError) as exc:
    st.error(f"{plain(stored.name)} cannot be read: {shown_text(exc, stored)}")
    st.stop()

# ---------------------------------------------------------------- options
st.subheader("Options")
c = st.columns(4)
engines = list(ENGINE_NAMES)
engine = c[0].selectbox("Engine", engines, key="ocr_engine", format_func=ENGINE_NAMES.__getitem__)
lang = c[1].selectbox("Language", ["auto", *LANGUAGES], key="ocr_lang",
                      format_func=lambda k: "Detect" if k == "auto" else f"{k} ({LANGUAGES[k][0]})")
vertical = c[2].selectbox("Vertical text", ["auto", "on", "off"], key="ocr_vertical",
                          help="Columns read top to bottom (Chinese, Japanese)")
enhanced = c[3].toggle("Enhanced", key="ocr_enhanced",
                       help="Tries more orientations and an upscaled copy; keeps the most confident reading (slower)")
use_layer = True
if pdf:
    use_layer = st.toggle(
        "Use the PDF's own text where it has one", value=True, key="ocr_text_layer",
        help="Pages made by a program (not scanned) carry their text: reading it is exact and instant, and the "
             "engine above is not used for them. Turn this off to read every page with the engine (e.g. when the "
             "embedded text is wrong or garbled).")
if total > 1:
    pages = st.text_input(f"Pages to read (of {total})", value="1-3" if total > 3 else "", key="ocr_pages",
                          placeholder="all", help="e.g. 1-3,5 ; empty reads every page")
else:
    pages = ""
if engine == "vlm" and not model_ready(settings, "Reading with Qwen3-VL"):
    st.stop()
try:
    options = OcrOptions(engine=engine, lang=None if lang == "auto" else lang, pages=pages.strip() or None,
                         enhanced=enhanced, vertical=vertical, use_text_layer=use_layer)
except OcrError as exc:
    st.error(shown(exc))
    st.stop()

digest = hashlib.sha256(json.dumps(options.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
jkey = f"ocr:{stored.sha256}:{digest}"
job = runtime.jobs.get(jkey)
running = job is not None and job.state is JobState.RUNNING


def work(ctx) -> OcrResult:
    return runtime.documents.read(stored.path, options, name=stored.name,
                                  progress=ctx.progress,
                                  cancel=ctx.cancel)


if st.button("Read text", type="primary", key="ocr_run", disabled=running, icon=":material/document_scanner:"):
    job = runtime.jobs.submit(jkey, f"Reading {stored.name}", work)
    # a page or two takes about a second: wait for it here and show it in this run, rather than drawing the
    # progress panel, polling it and redrawing the whole page when it ends
    with st.spinner(f"Reading {plain(stored.name)}..."):
        job.wait(INLINE_WAIT_S)
    running = job.state is JobState.RUNNING
state = job_panel(jkey, stored=stored)
result: OcrResult | None = job.result if job is not None and job.state in (JobState.DONE, JobState.CANCELLED) else None
page_no = 1


def _page_image(index: int):
    """Page `index` (0-based) as the result's boxes were measured on."""
    dpi = float(result.options.get("dpi") or 200) if result is not None else 200.0
    return next(iter_pages(stored.path, str(index + 1), dpi, settings.max_image_pixels, 1, False, settings)).image


def _page_list(indices: list[int]) -> str:
    return ", ".join(str(i + 1) for i in indices)


# ---------------------------------------------------------------- results
if result is None:
    if not running and state is None:
        st.info("Press **Read text**. Pages are saved as they are read, so a second run (or anyone else opening the "
                "same file) is instant.")
else:
    st.subheader("Result")
    n_lines = sum(len(p.lines) for p in result.pages)
    st.markdown(f"**{n_lines} lines** on {len(result.pages)} page(s) · {len(result.tables)} table(s)"
                f"{' · invoice fields' if result.fields else ''} · {result.seconds:.1f} s")
    layer_pages = [p.index for p in result.pages if p.source == "text-layer"]
    if layer_pages:
        engine_words = "the engine" if engine == "auto" else ENGINE_NAMES[engine]
        st.caption(f"Page(s) {_page_list(layer_pages)} read from the PDF's own text (exact), not by {engine_words}. "
                   "To read them with the engine instead, turn off **Use the PDF's own text where it has one**.")
    elif pdf and not use_layer:
        st.caption(f"Every page read by {ENGINE_NAMES[engine]}: the PDF's own text was not used.")
    for w in result.warnings:
        st.caption(f"Note: {shown(w)}")
    if total > 1 and result.pages:
        read = [p.index + 1 for p in result.pages]
        page_no = st.selectbox("Page shown", read, key="ocr_page_shown")
    page_view = next((p for p in result.pages if p.index == int(page_no) - 1), result.pages[0] if result.pages else None)
    if page_view is not None:
        meta = f"Page {page_view.index + 1}: {plain(page_view.engine)} · {plain(page_view.source)}"
        if page_view.language:
            meta += f" · language {plain(page_view.language)}"
        if page_view.preprocess.orientation:
            meta += f" · turned {page_view.preprocess.orientation}°"
        st.caption(meta)
        for w in page_view.warnings:
            if not (layer_pages and w.startswith(TEXT_LAYER_NOTE)):
                st.caption(f"Note: {shown(w)}")
        if not page_view.lines:
            st.warning("No text was found on this page. Try **Enhanced**, choose the language, or check that the page "
                       "holds text (photos of text work best when the text is at least 20 pixels high).")

    text_tab, md_tab, json_tab, boxes_tab = st.tabs(["Text", "Markdown", "JSON", "Boxes on the page"])
    with text_tab:
        st.code(result.text or "(no text)", language=None, wrap_lines=True)
    with md_tab:
        st.code(to_markdown(result), language="markdown", wrap_lines=True)
    with json_tab:
        st.json(result.to_dict(), expanded=1)
    with boxes_tab:
        if page_view is not None:
            try:
                st.caption("Hover over a box to see the text read there.")
                st.plotly_chart(boxes_figure(_page_image(page_view.index), page_view.lines), key="ocr_boxes",
                                config={"displaylogo": False})
            except OcrError as exc:
                st.error(shown(exc))

    if result.fields:
        f = result.fields
        st.subheader("Invoice fields")
        rows = field_rows(f)
        main = [r for r in rows if not r.key.startswith("line_items")]
        st.dataframe(pd.DataFrame({
            "Field": [r.label for r in main],
            "Value": [r.value for r in main],
            "Confidence": ["" if r.confidence is None else f"{r.confidence:.2f}" for r in main],
            "Page": ["" if r.page is None or not r.value else str(r.page + 1) for r in main],
            "Read from": [r.line if r.value else "" for r in main],
        }), hide_index=True, key="ocr_fields")
        if f.line_items:
            st.dataframe(pd.DataFrame([vars(li) for li in f.line_items]), hide_index=True, key="ocr_line_items")
        for check, ok in f.checks.items():
            st.markdown(f"{':material/check_circle:' if ok else ':material/error:'} {check.replace('_', ' ')}: "
                        f"{'passed' if ok else 'failed'}")
        for flag in f.flags:
            st.caption(f"Flag: {shown(flag)}")
        for w in f.warnings:
            st.caption(f"Note: {shown(w)}")
        on_pages = sorted({r.page for r in rows if r.page is not None and r.box and r.value})
        if on_pages:
            field_page = on_pages[0] if len(on_pages) == 1 else st.selectbox(
                "Fields on page", on_pages, key="ocr_fields_page", format_func=lambda i: str(i + 1))
            st.caption("Where each field was read: its box on the page, coloured by confidence (green: sure, amber: "
                       "check it, red: doubtful). Hover over a box for the value and the line it came from.")
            try:
                st.plotly_chart(fields_figure(_page_image(field_page), rows, field_page), key="ocr_fields_figure",
                                config={"displaylogo": False})
            except OcrError as exc:
                st.error(shown(exc))

    if result.tables:
        st.subheader("Tables")
        for n, table in enumerate(result.tables):
            st.caption(f"Table {n + 1} · page {table.page + 1} · {table.shape[0]}×{table.shape[1]} · {table.kind}")
            table_rows = table.rows
            width = max((len(r) for r in table_rows), default=0)
            st.dataframe(pd.DataFrame([r + [""] * (width - len(r)) for r in table_rows]), hide_index=True,
                         key=f"ocr_table_{n}")

    st.subheader("Export")
    cols = st.columns(len(FORMATS))
    base = stored.name.rsplit(".", 1)[0]

    def deferred(fmt: str):
        """The slower exports are made only when their button is pressed."""
        return lambda: export(result, fmt, source=stored.path, max_pixels=settings.max_image_pixels, settings=settings)

    for col, fmt in zip(cols, FORMATS):
        data = deferred(fmt) if fmt in ("pdf", "xlsx", "html") else export(result, fmt)
        col.download_button(FORMAT_NAMES[fmt], data, file_name=f"{base}.{fmt}", mime=MIME[fmt], key=f"ocr_dl_{fmt}",
                            on_click="ignore")

# ---------------------------------------------------------------- preprocessing preview (only while open)
preview = st.expander("Preprocessing: before and after", key="ocr_preview_open", on_change="rerun")
if preview.open:
    with preview:
        try:
            steps = preview_preprocessing(stored.path, options, page=int(page_no), settings=settings,
                                          engines=runtime.ocr)
        except OcrError as exc:
            steps = []
            st.error(shown(exc))
        applied = [s for s in steps if s.applied]
        if not applied:
            st.caption("No preprocessing was needed on this page: "
                       + "; ".join(f"{plain(s.name)}: {shown(s.detail)}" for s in steps))
        for s in applied:
            st.markdown(f"**{plain(s.name)}**")
            st.caption(shown(s.detail))
            bc = st.columns(2)
            if s.before is not None:
                bc[0].image(s.before, caption="before", clamp=True)
            if s.after is not None:
                bc[1].image(s.after, caption="after", clamp=True)

ask_box(stored, runtime, total, params)
