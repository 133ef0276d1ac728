"""Library: every file analysed on this server, searchable by name and by the text found in it; open one to see
its stored results (nothing is recomputed), export it, or delete it. Logic lives in core.library."""

from __future__ import annotations

import base64
from collections import Counter
from datetime import datetime

import pandas as pd
import streamlit as st

from core.charts.timeline import clock, lane_title, timeline_figure
from core.library import delete_item, export_item, get_item, load_results, search_items, thumbnail_of
from ui.safe import plain
from ui.state import get_cache, settings_or_stop, sidebar_generation_params

settings = settings_or_stop()
sidebar_generation_params()
cache = get_cache()
st.title("Library")
st.write("Every video, image and PDF analysed on this server, with what was computed. Results are stored, so opening "
         "one here is instant. Search by file name or by the text found in the files (OCR text, on-screen text, "
         "captions, answers).")

c = st.columns([3, 1])
query = c[0].text_input("Search", key="lib_query", placeholder="a file name, or words read in a document or video")
in_text = c[1].toggle("Search the text too", value=True, key="lib_in_text")
hits = search_items(cache, query, in_text=in_text)
if not hits:
    if query.strip():
        st.info(f"Nothing matches “{plain(query.strip())}”.")
    else:
        st.info("The library is empty. Files appear here once you open them on the Video Q&A or OCR page.")
    st.stop()


def _size(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.0f} KiB"


def _thumb(input_hash: str) -> str | None:
    data = thumbnail_of(cache, input_hash)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode() if data else None


rows = [{
    "Preview": _thumb(h.item.input_hash), "Name": h.item.name, "Kind": h.item.kind,
    "Added": datetime.fromtimestamp(h.item.added_at), "Stages done": ", ".join(h.item.stages) or "none yet",
    "Cache (KiB)": round(h.item.cache_bytes / 1024, 1), "Found in": ("name " if h.in_name else "") +
    (" / ".join(h.snippets) if h.snippets else ""),
} for h in hits]
st.caption(f"{len(hits)} file(s)" + (f" matching “{plain(query.strip())}”" if query.strip() else ""))
st.dataframe(pd.DataFrame(rows), hide_index=True, key="lib_table", row_height=60,
             column_config={"Preview": st.column_config.ImageColumn("Preview", width="small"),
                            "Added": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                            "Found in": st.column_config.TextColumn(width="large")})

names = {h.item.input_hash: f"{h.item.name} ({h.item.kind}, {h.item.input_hash[:8]})" for h in hits}
chosen = st.selectbox("Open", list(names), index=None, format_func=names.get, key="lib_open",
                      placeholder="Choose a file to see its results")
if chosen is None:
    st.stop()
item = get_item(cache, chosen)
if item is None:
    st.warning("This file was just deleted.")
    st.stop()

st.subheader(plain(item.name))
top = st.columns([1, 3])
thumb = thumbnail_of(cache, item.input_hash)
if thumb:
    top[0].image(thumb)
top[1].markdown(f"**{plain(item.kind)}** · added {datetime.fromtimestamp(item.added_at):%Y-%m-%d %H:%M} · "
                f"{_size(item.size_bytes)} · {item.entries} stored results, {_size(item.cache_bytes)} in the cache")
top[1].caption(f"Stages done: {plain(', '.join(item.stages) or 'none yet')}")
if not item.available:
    top[1].caption("The file itself is no longer on the server: its stored results are shown, but new analyses "
                   "need the file again.")
res = load_results(cache, item.input_hash)

if res.events:
    counts = Counter(lane_title(e.kind) for e in res.events)
    st.markdown("**Events** · " + " · ".join(f"{k}: {v}" for k, v in counts.items()))
    duration = float((res.probe or {}).get("duration") or max(e.end for e in res.events))
    st.plotly_chart(timeline_figure(res.events, duration), key="lib_timeline", config={"displaylogo": False})
    st.dataframe(pd.DataFrame([{"Start": clock(e.start), "End": clock(e.end), "Kind": lane_title(e.kind),
                                "Label": e.label} for e in res.events]), hide_index=True, key="lib_events")
if res.ocr_pages:
    st.markdown(f"**OCR text** · {len(res.ocr_pages)} page(s)")
    st.code(res.ocr_text or "(no text)", language=None, wrap_lines=True)
if res.chapters:
    st.markdown("**Chapters**")
    st.dataframe(pd.DataFrame([{"Start": clock(ch.get("start", 0)), "Title": ch.get("title", ""),
                                "Summary": ch.get("summary", "")} for ch in res.chapters]), hide_index=True,
                 key="lib_chapters")
    if res.summary:
        st.text(res.summary)
if not (res.events or res.ocr_pages or res.chapters):
    st.info("Nothing has been computed for this file yet: open it on the Video Q&A or OCR page.")

b = st.columns([1, 1, 3])
b[0].download_button("Export (zip)", export_item(cache, item.input_hash), file_name=f"{item.name}.vlscope.zip",
                     mime="application/zip", key="lib_export", icon=":material/download:", on_click="ignore")
with b[1].popover("Delete", icon=":material/delete:"):
    st.write(f"Delete every stored result of {plain(item.name)}, its uploaded copy and its player copy?")
    if st.button("Delete for good", type="primary", key="lib_delete"):
        removed = delete_item(cache, item.input_hash, settings.cache_dir)
        st.session_state.pop("lib_open", None)
        st.toast(f"Deleted {removed} stored results.")
        st.rerun()
