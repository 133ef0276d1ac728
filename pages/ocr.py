"""OCR: read an image or PDF into text, tables and invoice fields; see what preprocessing did; export it all.
Reading is the runtime's document service (core.app.documents) run as a background job; this page keeps
the widgets and the rendering."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import streamlit as st

from core.jobs import JobState
from core.ocr.exports import FORMATS, export, to_markdown
from core.ocr.loading import count_pages, iter_pages
from core.ocr.pipeline import OcrOptions, preview_preprocessing
from core.ocr.scripts import LANGUAGES
from core.ocr.types import OcrError, OcrResult
from ui.document_qa import ask_box
from ui.files import pick_file
from ui.jobs import job_panel
from ui.model import model_ready
from ui.ocr_view import boxes_figure
from ui.safe import plain
from ui.state import get_cache, get_runtime, settings_or_stop, sidebar_generation_params

MIME = {"txt": "text/plain", "md": "text/markdown", "json": "application/json", "csv": "text/csv",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "pdf": "application/pdf",
        "html": "text/html"}
FORMAT_NAMES = {"txt": "Text", "md": "Markdown", "json": "JSON", "csv": "CSV (tables, fields)", "xlsx": "Excel",
                "pdf": "Searchable PDF", "html": "HTML tables"}

settings = settings_or_stop()
params = sidebar_generation_params()
runtime = get_runtime()
get_cache()  # the shared result cache opens now: one that cannot stops the page with its fix
st.title("OCR")
st.write("Read the text of an image or a PDF: lines with their boxes, tables as grids, invoice and receipt fields "
         "with their checks, and exports. Runs on the CPU with RapidOCR or Tesseract; the model is optional.")

stored = pick_file("document", "ocr")
if stored is None:
    st.info("Upload an image (PNG, JPEG, TIFF, WebP...) or a PDF to start.")
    st.stop()

try:
    total = count_pages(stored.path)
except OcrError as exc:
    st.error(f"{plain(stored.name)} cannot be read: {plain(exc)}")
    st.stop()

# ---------------------------------------------------------------- options
st.subheader("Options")
c = st.columns(4)
engines = ["auto", "rapidocr", "tesseract", "vlm"]
engine = c[0].selectbox("Engine", engines, key="ocr_engine",
                        format_func=lambda e: {"auto": "Auto (best for the language)", "rapidocr": "RapidOCR",
                                               "tesseract": "Tesseract", "vlm": "Qwen3-VL (model)"}[e])
lang = c[1].selectbox("Language", ["auto", *LANGUAGES], key="ocr_lang",
                      format_func=lambda k: "Detect" if k == "auto" else f"{k} ({LANGUAGES[k][0]})")
vertical = c[2].selectbox("Vertical text", ["auto", "on", "off"], key="ocr_vertical",
                          help="Columns read top to bottom (Chinese, Japanese)")
enhanced = c[3].toggle("Enhanced", key="ocr_enhanced",
                       help="Tries more orientations and an upscaled copy; keeps the most confident reading (slower)")
if total > 1:
    pages = st.text_input(f"Pages to read (of {total})", value="1-3" if total > 3 else "", key="ocr_pages",
                          placeholder="all", help="e.g. 1-3,5 ; empty reads every page")
else:
    pages = ""
if engine == "vlm" and not model_ready(settings, "Reading with Qwen3-VL"):
    st.stop()
try:
    options = OcrOptions(engine=engine, lang=None if lang == "auto" else lang, pages=pages.strip() or None,
                         enhanced=enhanced, vertical=vertical)
except OcrError as exc:
    st.error(plain(exc))
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
    runtime.jobs.submit(jkey, f"Reading {stored.name}", work)
    st.rerun()
state = job_panel(jkey)
result: OcrResult | None = job.result if job is not None and job.state in (JobState.DONE, JobState.CANCELLED) else None

# ---------------------------------------------------------------- preprocessing preview
page_no = 1
if total > 1:
    page_no = st.number_input("Page shown", 1, total, 1, key="ocr_page_shown")
with st.expander("Preprocessing: before and after", expanded=False):
    try:
        steps = preview_preprocessing(stored.path, options, page=int(page_no), settings=settings, engines=runtime.ocr)
    except OcrError as exc:
        steps = []
        st.error(plain(exc))
    applied = [s for s in steps if s.applied]
    if not applied:
        st.caption("No preprocessing was needed on this page: "
                   + "; ".join(f"{plain(s.name)}: {plain(s.detail)}" for s in steps))
    for s in applied:
        st.markdown(f"**{plain(s.name)}**")
        st.caption(plain(s.detail))
        bc = st.columns(2)
        if s.before is not None:
            bc[0].image(s.before, caption="before", clamp=True)
        if s.after is not None:
            bc[1].image(s.after, caption="after", clamp=True)

ask_box(stored, runtime, total, params)

if result is None:
    if not running and state is None:
        st.info("Press **Read text**. Pages are saved as they are read, so a second run (or anyone else opening the "
                "same file) is instant.")
    st.stop()

# ---------------------------------------------------------------- results
st.subheader("Result")
n_lines = sum(len(p.lines) for p in result.pages)
st.markdown(f"**{n_lines} lines** on {len(result.pages)} page(s) · {len(result.tables)} table(s)"
            f"{' · invoice fields' if result.fields else ''} · {result.seconds:.1f} s")
for w in result.warnings:
    st.caption(f"Note: {plain(w)}")
shown = next((p for p in result.pages if p.index == int(page_no) - 1), result.pages[0] if result.pages else None)
if shown is not None:
    meta = f"Page {shown.index + 1}: {plain(shown.engine)} · {plain(shown.source)}"
    if shown.language:
        meta += f" · language {plain(shown.language)}"
    if shown.preprocess.orientation:
        meta += f" · turned {shown.preprocess.orientation}°"
    st.caption(meta)
    for w in shown.warnings:
        st.caption(f"Note: {plain(w)}")
    if not shown.lines:
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
    if shown is not None:
        try:
            image = next(iter_pages(stored.path, str(shown.index + 1), float(result.options.get("dpi") or 200),
                                    settings.max_image_pixels, 1, False, settings)).image
            st.caption("Hover over a box to see the text read there.")
            st.plotly_chart(boxes_figure(image, shown.lines), key="ocr_boxes", config={"displaylogo": False})
        except OcrError as exc:
            st.error(plain(exc))

if result.tables:
    st.subheader("Tables")
    for n, table in enumerate(result.tables):
        st.caption(f"Table {n + 1} · page {table.page + 1} · {table.shape[0]}×{table.shape[1]} · {table.kind}")
        rows = table.rows
        width = max((len(r) for r in rows), default=0)
        st.dataframe(pd.DataFrame([r + [""] * (width - len(r)) for r in rows]), hide_index=True, key=f"ocr_table_{n}")

if result.fields:
    f = result.fields
    st.subheader("Invoice fields")
    fields = {"Vendor": f.vendor, "Invoice number": f.invoice_number, "Date": f.date, "Subtotal": f.subtotal,
              "Tax": f.tax, "Total": f.total, "Currency": f.currency, "Tax id": f.tax_id}
    st.dataframe(pd.DataFrame({"Field": list(fields), "Value": [("" if v is None else str(v)) for v in fields.values()]}),
                 hide_index=True, key="ocr_fields")
    if f.line_items:
        st.dataframe(pd.DataFrame([vars(li) for li in f.line_items]), hide_index=True, key="ocr_line_items")
    for check, ok in f.checks.items():
        st.markdown(f"{':material/check_circle:' if ok else ':material/error:'} {check.replace('_', ' ')}: "
                    f"{'passed' if ok else 'failed'}")
    for flag in f.flags:
        st.caption(f"Flag: {plain(flag)}")

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
