"""Library: every file analysed on this server; search the text found in them (the full-text index of
core.library.index), filter by kind, where the text was found and date, open a hit on its page at that moment,
see an item's stored results (nothing is recomputed), play it, export or delete it. Logic lives in core.library.

Links to the other pages carry the file's content sha256: `?file=<sha>&t=<seconds>` for a moment of a video
(Video Q&A), `?file=<sha>&page=<n>` for a page of a document (OCR)."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time as dtime, timedelta
from typing import Any

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from core.charts.timeline import clock, lane_title, timeline_figure
from core.library import delete_item, export_item, get_item, load_results, thumbnail_of
from core.library.index import FILE_KINDS, STAGE_GROUPS, open_index
from ui.safe import plain
from ui.state import get_cache, settings_or_stop, sidebar_generation_params

PAGE_SIZE = 20
VIDEO_PAGE, DOCUMENT_PAGE = "pages/video.py", "pages/ocr.py"

settings = settings_or_stop()
sidebar_generation_params()
cache = get_cache()
st.title("Library")
st.write("Every video, image and PDF analysed on this server, with what was computed. Results are stored, so opening "
         "one here is instant. Search the text found in the files (OCR text, on-screen text, what is said, captions, "
         "chapters, answers) or their names; a hit opens the file on its page at that moment.")

flash = st.session_state.pop("lib_flash", None)
if flash:
    st.success(plain(flash), icon=":material/check_circle:")

try:
    index = open_index(cache, settings.cache_dir)
    with st.spinner("Bringing the search index up to date with the stored results..."):
        index.sync_for_reading()
except Exception as exc:  # noqa: BLE001 - e.g. a cache folder that cannot be written
    st.error(f"The library's search index could not be opened: {plain(exc)}. Check that the cache folder can be "
             "written to, then reload the page.")
    st.stop()
for problem in index.problems[-3:]:
    st.warning(plain(problem))
index.problems.clear()


def _size(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.0f} KiB"


def _md(text: str) -> str:
    """Untrusted text for Markdown, every character shown as it is, the spaces at its ends kept."""
    body = plain(text)
    if not body:
        return " " if text else ""
    return (" " if text[:1].isspace() else "") + body + (" " if text[-1:].isspace() else "")


def _snippet_md(snippet: Any) -> str:
    """A snippet as Markdown: its text escaped, the matched words in bold."""
    return "".join(f"**{plain(part)}**" if marked and plain(part) else _md(part) for part, marked in snippet.parts())


def _target(kind: str) -> tuple[str, str]:
    """The page that opens a file of `kind`, and its name."""
    return (VIDEO_PAGE, "Video Q&A") if kind == "video" else (DOCUMENT_PAGE, "OCR")


def _link(page: str, label: str, icon: str, query_params: dict[str, str]) -> None:
    """A link to another page of the app; none when this page runs on its own, outside the app's navigation."""
    try:
        st.page_link(page, label=label, icon=icon, query_params=query_params)
    except StreamlitPageNotFoundError:
        pass


def _open_details(input_hash: str, at: float | None = None, page: int | None = None) -> None:
    st.session_state["lib_open"] = input_hash
    st.session_state["lib_at"] = {"t": at, "page": page}


def _day_bounds(picked: Any) -> tuple[float | None, float | None]:
    """Epoch seconds of the start of the first chosen day and of the day after the last (local time)."""
    days = [d for d in (picked if isinstance(picked, (list, tuple)) else [picked]) if isinstance(d, date)]
    if not days:
        return None, None
    first, last = min(days), max(days)
    return (datetime.combine(first, dtime.min).timestamp(),
            datetime.combine(last + timedelta(days=1), dtime.min).timestamp())


# ---------------------------------------------------------------- search and filters
c = st.columns([4, 2, 3, 3])
query = c[0].text_input("Search", key="lib_query", placeholder="words in a video or document, or a file name")
kind_labels = {label: kind for kind, label in FILE_KINDS.items() if kind != "other"}
kinds = [kind_labels[k] for k in c[1].multiselect("Kind", list(kind_labels), key="lib_kinds", placeholder="All kinds")]
groups = c[2].multiselect("Found in", list(STAGE_GROUPS), key="lib_stages", placeholder="Anywhere",
                          help="Where the words were found: on-screen text, OCR text, captions, chapters, answers, "
                               "speech (what is said in a video) or the file name.")
since, until = _day_bounds(c[3].date_input("Added between", value=[], key="lib_dates", format="YYYY-MM-DD"))
stages = [s for g in groups for s in STAGE_GROUPS[g]]

if query.strip():
    result = index.search(query, kinds=kinds or None, stages=stages or None, since=since, until=until, limit=50,
                          sync=False)
    if not result.hits:
        st.info(f"Nothing matches “{plain(query.strip())}”" + (" with these filters." if kinds or stages or since
                                                                 else ".") + " Every word must be found in the same place.")
    else:
        plus = "+" if result.more else ""
        st.caption(f"“{plain(query.strip())}” found in {result.total:,}{plus} place(s) in {result.files:,}{plus} "
                   f"file(s), best first; {len(result.hits)} shown ({result.seconds * 1000:.0f} ms).")
    for n, hit in enumerate(result.hits):
        with st.container(border=True, key=f"lib_hit_{n}"):
            row = st.columns([1, 9], vertical_alignment="center")
            thumb = thumbnail_of(cache, hit.input_hash)
            if thumb:
                row[0].image(thumb, width=96)
            if hit.start is not None and hit.kind == "video":
                where, label = f"{hit.stage_label} at {clock(hit.start)}", f"Play at {clock(hit.start)}"
            elif hit.page is not None:
                where, label = f"{hit.stage_label}, page {hit.page}", f"Open page {hit.page}"
            else:
                where, label = hit.stage_label, "Open"
            row[1].markdown(f"**{plain(hit.name)}** · {FILE_KINDS.get(hit.kind, 'Other')} · {plain(where)}")
            row[1].markdown(_snippet_md(hit.snippet))
            with row[1].container(horizontal=True, gap="medium"):
                _link(_target(hit.kind)[0], label, ":material/play_circle:" if hit.kind == "video" else
                      ":material/description:", hit.link_params())
                st.button("Details", key=f"lib_hit_details_{n}", on_click=_open_details,
                          args=(hit.input_hash, hit.start, hit.page), type="tertiary", icon=":material/info:")
else:
    shown = st.session_state.setdefault("lib_shown", PAGE_SIZE)
    items, total = index.items(kinds=kinds or None, since=since, until=until, limit=shown, sync=False)
    if not total:
        if kinds or since:
            st.info("No file matches these filters.")
        else:
            st.info("The library is empty. Files appear here once you open them on the Video Q&A or OCR page.")
    else:
        st.caption(f"{total:,} file(s), most recently added first" + (f"; the first {len(items)} shown"
                                                                        if len(items) < total else ""))
    for n, item in enumerate(items):
        with st.container(border=True, key=f"lib_item_{n}"):
            row = st.columns([1, 9], vertical_alignment="center")
            thumb = thumbnail_of(cache, item.input_hash)
            if thumb:
                row[0].image(thumb, width=96)
            row[1].markdown(f"**{plain(item.name)}** · {FILE_KINDS.get(item.kind, 'Other')} · added "
                            f"{datetime.fromtimestamp(item.added_at):%Y-%m-%d %H:%M} · {_size(item.size_bytes)}")
            row[1].caption("Done: " + plain(", ".join(item.stages)) if item.stages else
                           "Opened; nothing computed yet.")
            target, page_name = _target(item.kind)
            with row[1].container(horizontal=True, gap="medium"):
                _link(target, f"Open on {page_name}", ":material/open_in_new:", {"file": item.input_hash})
                st.button("Details", key=f"lib_item_details_{n}", on_click=_open_details, args=(item.input_hash,),
                          type="tertiary", icon=":material/info:")
    if len(items) < total:
        st.button(f"Show {min(PAGE_SIZE, total - len(items))} more", key="lib_more",
                  on_click=lambda: st.session_state.update(lib_shown=shown + PAGE_SIZE))

# ---------------------------------------------------------------- one item's stored results
chosen = st.session_state.get("lib_open")
if chosen is None:
    st.stop()
item = get_item(cache, chosen)
if item is None:
    st.session_state.pop("lib_open", None)
    st.stop()
at = st.session_state.get("lib_at") or {}
st.divider()
head = st.columns([6, 1], vertical_alignment="center")
head[0].subheader(plain(item.name))
head[1].button("Close", key="lib_close", icon=":material/close:",
               on_click=lambda: [st.session_state.pop(k, None) for k in ("lib_open", "lib_at")])
top = st.columns([1, 3])
thumb = thumbnail_of(cache, item.input_hash)
if thumb:
    top[0].image(thumb)
top[1].markdown(f"**{FILE_KINDS.get(item.kind, 'Other')}** · added {datetime.fromtimestamp(item.added_at):%Y-%m-%d %H:%M}"
                f" · {_size(item.size_bytes)} · {item.entries} stored results, {_size(item.cache_bytes)} in the cache")
top[1].caption("Done: " + plain(", ".join(item.stages)) if item.stages else "Opened; nothing computed yet.")
target, page_name = _target(item.kind)
params = {"file": item.input_hash}
if at.get("t") is not None and item.kind == "video":
    params["t"] = f"{at['t']:g}"
elif at.get("page") is not None:
    params["page"] = str(at["page"])
with top[1]:
    _link(target, f"Open on {page_name}" + (f" at {clock(at['t'])}" if "t" in params else
                                            f", page {at['page']}" if "page" in params else ""),
          ":material/open_in_new:", params)
res = load_results(cache, item.input_hash)

if item.kind == "video":
    if not item.available:
        st.caption("The file itself is no longer on the server: its stored results are shown, but playing it and new "
                   "analyses need the file again.")
    else:
        from core.files import needs_proxy, proxy_path
        from core.media.probe import VideoInfo

        why = needs_proxy(VideoInfo.from_dict(res.probe)) if res.probe else None
        proxy = proxy_path(settings.cache_dir, item.input_hash)
        playable = item.path if why is None else (str(proxy) if proxy.is_file() else None)
        if playable:
            st.columns([3, 2])[0].video(playable, start_time=int(at.get("t") or 0))
        else:
            st.caption(f"To play it here, open it on the Video Q&A page once: the player needs a small copy because "
                       f"{plain(why)}.")
elif not item.available:
    st.caption("The file itself is no longer on the server: its stored results are shown, but new analyses need the "
               "file again.")

if res.events:
    counts = Counter(lane_title(e.kind) for e in res.events)
    st.markdown("**Events** · " + " · ".join(f"{k}: {v}" for k, v in counts.items()))
    duration = float((res.probe or {}).get("duration") or max(e.end for e in res.events))
    st.plotly_chart(timeline_figure(res.events, duration), key="lib_timeline", config={"displaylogo": False})
    st.dataframe(pd.DataFrame([{"Start": clock(e.start), "End": clock(e.end), "Kind": lane_title(e.kind),
                                "Label": e.label} for e in res.events]), hide_index=True, key="lib_events",
                 column_config={"Label": st.column_config.TextColumn(width="large")})
if res.ocr_pages:
    st.markdown(f"**OCR text** · {len(res.ocr_pages)} page(s)")
    st.code(res.ocr_text or "(no text)", language=None, wrap_lines=True)
if res.chapters:
    st.markdown("**Chapters**")
    st.dataframe(pd.DataFrame([{"Start": clock(ch.get("start", 0)), "Title": ch.get("title", ""),
                                "Summary": ch.get("summary", "")} for ch in res.chapters]), hide_index=True,
                 key="lib_chapters", column_config={"Summary": st.column_config.TextColumn(width="large")})
    if res.summary:
        st.text(res.summary)
if res.transcript is not None:
    said = [seg for seg in res.transcript.get("segments", [])
            if isinstance(seg, dict) and str(seg.get("text", "")).strip()]
    engine = {"pocketsphinx": "PocketSphinx", "whisper": "Whisper", "qwen3_asr": "Qwen3-ASR"}.get(
        str(res.transcript.get("engine", "")), "a speech engine")
    st.markdown(f"**Speech** · {len(said)} segment(s) · heard by {plain(engine)}")
    if said:
        st.dataframe(pd.DataFrame([{"Start": clock(float(seg.get("start", 0))), "End": clock(float(seg.get("end", 0))),
                                    "Said": " ".join(str(seg.get("text", "")).split())} for seg in said]),
                     hide_index=True, key="lib_speech",
                     column_config={"Said": st.column_config.TextColumn(width="large")})
if not (res.events or res.ocr_pages or res.chapters or res.transcript is not None):
    st.info(f"Nothing has been computed for this file yet: open it on the {page_name} page.")

b = st.columns([1, 1, 3])
b[0].download_button("Export (zip)", export_item(cache, item.input_hash), file_name=f"{item.name}.vlscope.zip",
                     mime="application/zip", key="lib_export", icon=":material/download:", on_click="ignore")
with b[1].popover("Delete", icon=":material/delete:"):
    st.write(f"Delete every stored result of {plain(item.name)}, its uploaded copy and its player copy? This cannot "
             "be undone.")
    if st.button("Delete for good", type="primary", key="lib_delete"):
        removed = delete_item(cache, item.input_hash, settings.cache_dir)
        index.forget_input(item.input_hash)
        for k in ("lib_open", "lib_at"):
            st.session_state.pop(k, None)
        st.session_state["lib_flash"] = (f"Deleted {item.name}: {removed} stored result(s), its uploaded copy and its "
                                         "player copy are gone.")
        st.rerun()
