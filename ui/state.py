"""The process's one `Runtime` (settings, result cache, engine, OCR engines, jobs) for every browser
session, the sign-in gate, the sidebar, and each browser session's working set.

The working set: the file open in this browser session, one video and one document (image or PDF), whichever page
opened it (an upload, the server folder, the Library, a link with `?file=<sha256>&t=<seconds>`); every page shows
it until another is opened or it is closed. The session's background jobs are listed in the sidebar with their
progress and a link back to their page, where they reattach. Pages call `get_runtime()` and its services
(core/app)."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import streamlit as st

from core.app import Runtime
from core.cache import CacheBackend
from core.settings import Settings, SettingsError, load_settings
from core.vlm import Engine, GenerationParams

if TYPE_CHECKING:  # pragma: no cover - typing only
    from core.files import StoredFile


@st.cache_resource(show_spinner=False)
def get_settings() -> Settings:
    """Settings read once per server process (restart the app to apply changes)."""
    return load_settings()


def settings_or_stop() -> Settings:
    """The settings, or an error box naming the bad setting (and the page stops).

    Also the sign-in gate (ui.auth.sign_in): with sign-in configured, nobody gets past this line of any page
    without signing in, and the run records who is signed in.
    """
    try:
        settings = get_settings()
    except SettingsError as exc:
        st.error(str(exc))
        st.stop()
        raise
    from ui.auth import sign_in

    sign_in(settings)
    return settings


@st.cache_resource(show_spinner=False)
def _shared_runtime() -> Runtime:
    return Runtime.build(get_settings())


def get_runtime() -> Runtime:
    """The runtime shared by every session (one engine, one cache, one job registry per server process)."""
    return _shared_runtime()


def get_engine() -> Engine:
    """The single model engine shared by every session; it loads its weights on first use."""
    return get_runtime().engine


def get_cache() -> CacheBackend:
    """The result cache shared by every session; a cache that cannot be opened stops the page with the fix."""
    try:
        return get_runtime().cache
    except SettingsError as exc:  # e.g. the Redis server of a shared cache is down
        st.error(str(exc))
        st.stop()
        raise


def sidebar_generation_params() -> GenerationParams:
    """Sidebar: engine status and the generation settings every page uses; returns them."""
    settings = settings_or_stop()
    honour_query_params()
    working_set_sidebar()
    engine = get_engine()
    info = engine.info()
    with st.sidebar:
        st.subheader("Model")
        st.text(f"{settings.model}")
        if info.loaded:
            st.caption(f"Loaded on {info.device} · {info.dtype} · {info.attn_implementation} · quantisation {info.quantization}"
                       + (f" · decoding: {info.decoding.split(' (')[0]}" if info.decoding else ""))
        elif info.error:
            st.caption("Not loaded: see Home for the cause and fix.")
        else:
            st.caption(f"Not loaded yet (loads on first question) · precision {settings.dtype} · quantisation {settings.quantization}")
        st.caption("Model and precision come from settings (VLSCOPE_MODEL, VLSCOPE_DTYPE, VLSCOPE_QUANTIZATION); restart to change.")
        # the same widgets on every page: their values follow the user from page to page
        max_new = st.number_input("Max new tokens", min_value=1, max_value=32768, value=settings.max_new_tokens, step=64,
                                  key="gen_max_new_tokens", persist_state="session")
        defaults = GenerationParams()
        temperature = st.slider("Temperature (0 = greedy)", 0.0, 2.0, defaults.temperature, 0.05, key="gen_temperature",
                                persist_state="session")
        top_p = st.slider("Top p", 0.05, 1.0, defaults.top_p, 0.05, key="gen_top_p", persist_state="session")
    return GenerationParams(max_new_tokens=int(max_new), temperature=float(temperature), top_p=float(top_p))


# ---------------------------------------------------------------------------------------------- the working set
WORKING = "working_set"  # session key: {"video": StoredFile, "document": StoredFile}
SEEKS = "working_seek"  # session key: {sha256: seconds} where the player of that video stands
NOTICE = "working_notice"  # session key: a message for the next page that shows a file picker
JOBS = "working_jobs"  # session key: {job key: {"page": ..., "sha": ..., "name": ...}} started in this session
LINK = "working_link"  # session key: the (file, t, page) query parameters already opened
DOC_PAGES = "working_doc_page"  # session key: {sha256: 1-based page} a link asked to show
PAGES = {"video": ("pages/video.py", "Video Q&A"), "summaries": ("pages/summaries.py", "Summaries"),
         "ocr": ("pages/ocr.py", "OCR")}
_SHA = re.compile(r"^[0-9a-f]{64}$")


def slot_of(kind: str) -> str | None:
    """The working-set slot of a file kind: "video" for videos, "document" for images and PDFs, else None."""
    return {"video": "video", "image": "document", "pdf": "document", "document": "document"}.get(kind)


def current_file(slot: str) -> "StoredFile | None":
    """The file open in this session for `slot` ("video" or "document"), or None."""
    return st.session_state.get(WORKING, {}).get(slot)


def set_current(stored: "StoredFile") -> None:
    """Make `stored` the current file of its slot for every page of this session."""
    slot = slot_of(stored.kind)
    if slot is None:
        return
    files = dict(st.session_state.get(WORKING, {}))
    files[slot] = stored
    st.session_state[WORKING] = files


def close_current(slot: str) -> None:
    """Close the current file of `slot` (every page then asks for a file again)."""
    files = dict(st.session_state.get(WORKING, {}))
    files.pop(slot, None)
    st.session_state[WORKING] = files


def seek_of(sha: str) -> float:
    """Where the player of the video `sha` stands in this session (seconds; 0 when never moved)."""
    return float(st.session_state.get(SEEKS, {}).get(sha, 0.0))


def seek_to(sha: str, t: float) -> None:
    """Move the player of the video `sha` to `t` seconds (on every page that plays it)."""
    seeks = dict(st.session_state.get(SEEKS, {}))
    seeks[sha] = max(0.0, float(t))
    st.session_state[SEEKS] = seeks


def page_of(sha: str) -> int | None:
    """The document page (1-based) a link asked to show for the document `sha` (`?file=<sha>&page=<n>`), or None."""
    return st.session_state.get(DOC_PAGES, {}).get(sha)


def notice(text: str) -> None:
    """A message the next file picker shows once (e.g. a Library file that is no longer on the server)."""
    st.session_state[NOTICE] = text


def take_notice() -> str | None:
    """The pending message for the file picker, once."""
    return st.session_state.pop(NOTICE, None)


def open_file(sha: str, name: str, kind: str, t: float | None = None) -> "StoredFile | None":
    """Open the stored file with content hash `sha` as the current file of this session (for every page), the
    player at `t` seconds for a video. `name` is the file's name shown to the user, `kind` "video", "image" or "pdf"
    (a Library item's). Finds the file among the uploads (kept by hash) or, for a file opened from the server
    folder, at its recorded path. Returns the file, or None when it is no longer on the server: then the message
    naming it and the fix is shown by the next page's file picker (and `take_notice` returns it)."""
    sha = str(sha).strip().lower()
    if slot_of(kind) is None:
        notice(f"{name} cannot be opened on these pages: only videos, images and PDFs can.")
        return None
    stored = find_stored(sha, name, kind) if _SHA.match(sha) else None
    if stored is None:
        notice(f"{name} is no longer on the server (its copy was removed, for example to keep the cache within its "
               "size limit); its stored results are still in the Library. Upload it again to work on it.")
        return None
    set_current(stored)
    if t is not None and slot_of(stored.kind) == "video":
        seek_to(stored.sha256, t)
    return stored


def honour_query_params() -> None:
    """Open the file a link names (`?file=<content sha256>&t=<seconds>`, or `&page=<n>` for a document), once per
    link: the Library's links to a file, to a moment in it, to a page of it (`page_of`). A link naming no stored
    file leaves a message for the file picker."""
    params = st.query_params
    sha = (params.get("file") or "").strip().lower()
    raw_t = (params.get("t") or "").strip()
    raw_page = (params.get("page") or "").strip()
    if not sha:
        st.session_state.pop(LINK, None)  # no link now: the same link followed again opens the file again
        return
    if st.session_state.get(LINK) == (sha, raw_t, raw_page):
        return
    st.session_state[LINK] = (sha, raw_t, raw_page)
    if raw_page.isdigit() and int(raw_page) >= 1:
        st.session_state[DOC_PAGES] = {**st.session_state.get(DOC_PAGES, {}), sha: int(raw_page)}
    t: float | None = None
    if raw_t:
        try:
            t = float(raw_t)
        except ValueError:
            t = None
        if t is None or not math.isfinite(t) or t < 0:
            notice(f"The link's time “{raw_t}” is not a number of seconds: the file opens at its start.")
            t = None
    if not _SHA.match(sha):
        notice("The link names no stored file (its file code is not one the dashboard makes). Open the file from "
               "the Library instead.")
        return
    name, kind = _described(sha)
    if kind is None:
        notice("The file this link names is not on this server. Open it from the Library or upload it.")
        return
    open_file(sha, name, kind, t)


def _described(sha: str) -> tuple[str, str | None]:
    """(name, kind) of a stored file from its Library entry, else from its upload; kind None when unknown."""
    from core.files import file_kind
    from core.library import get_item

    try:
        item = get_item(get_cache(), sha)
    except Exception:  # noqa: BLE001 - the library is a convenience: the upload store is asked next
        item = None
    if item is not None:
        return item.name, item.kind
    found = find_stored(sha)
    if found is None:
        return "", None
    return found.name, file_kind(found.path)


def find_stored(sha: str, name: str | None = None, kind: str | None = None) -> "StoredFile | None":
    """The file with content hash `sha` on this server, or None: an upload (kept as `<sha><suffix>` in the upload
    folder) or a server-folder file at the path its Library entry recorded (still inside the folder, same content).
    `name` (the file's own name) is what the user reads; the stored copy's name is made of the hash."""
    from dataclasses import replace

    from core.files import FileError, StoredFile, file_kind, media_root, open_server_file, upload_dir
    from core.library import get_item

    sha = sha.strip().lower()
    if not _SHA.match(sha):
        return None
    settings = get_settings()
    folder = upload_dir(settings.cache_dir)
    for path in sorted(folder.glob(f"{sha}*")):
        rest = path.name[len(sha):]
        if path.is_file() and (rest == "" or rest.startswith(".")):
            shown = name or f"file{path.suffix}"
            return StoredFile(str(path), shown, path.stat().st_size, sha, kind or file_kind(shown), "upload")
    try:
        item = get_item(get_cache(), sha)
    except Exception:  # noqa: BLE001 - no library entry to go by
        item = None
    root = media_root(settings)
    if item is None or not item.path or root is None:
        return None
    try:
        stored = open_server_file(item.path, root)
    except FileError:
        return None
    if stored.sha256 != sha:
        return None  # the file at that path changed since: not the one asked for
    return replace(stored, name=name or item.name)


def track_job(key: str, page: str, stored: "StoredFile | None" = None) -> None:
    """Remember that this session started job `key` on `page` ("video", "summaries" or "ocr"): the sidebar lists
    it with its progress and a link back to that page, where it reattaches."""
    jobs = dict(st.session_state.get(JOBS, {}))
    jobs.pop(key, None)
    jobs[key] = {"page": page, "sha": stored.sha256 if stored else "", "name": stored.name if stored else ""}
    st.session_state[JOBS] = dict(list(jobs.items())[-12:])


def _page_of(key: str) -> str | None:
    for prefix, page in (("video:", "video"), ("proxy:", "video"), ("ingest:", "video"), ("speech:", "video"),
                         ("summary:", "summaries"), ("ocr:", "ocr")):
        if key.startswith(prefix):
            return page
    return None


def session_jobs() -> list[tuple[Any, str]]:
    """(job, page) of the jobs this session started, and of running jobs on its open files, newest first."""
    from core.jobs import registry

    reg = registry()
    seen: set[str] = set()
    out: list[tuple[Any, str]] = []
    for key, meta in reversed(list(st.session_state.get(JOBS, {}).items())):
        job = reg.get(key)
        if job is not None:
            seen.add(key)
            out.append((job, meta.get("page") or _page_of(key) or "video"))
    open_hashes = {f.sha256 for f in st.session_state.get(WORKING, {}).values()}
    for job in reg.running():
        page = _page_of(job.key)
        parts = job.key.split(":")
        if job.key not in seen and page and len(parts) > 1 and parts[1] in open_hashes:
            out.append((job, page))
    return out


def _link(page: str, label: str, icon: str | None = None) -> None:
    """A link to one of the pages (plain text where the page is not registered, e.g. a page tested on its own)."""
    from streamlit.errors import StreamlitAPIException

    path, _title = PAGES[page]
    try:
        st.page_link(path, label=label, icon=icon)
    except StreamlitAPIException:
        st.caption(label)


def working_set_sidebar() -> None:
    """Sidebar: the files open in this session and its jobs (live while one runs), each with a link to its page."""
    from ui.safe import plain

    files = st.session_state.get(WORKING, {})
    jobs = session_jobs()
    if not files and not jobs:
        return
    with st.sidebar:
        if files:
            st.subheader("Open files")
            for slot, stored in files.items():
                pages = ("video", "summaries") if slot == "video" else ("ocr",)
                st.caption(f"{'Video' if slot == 'video' else 'Document'}: **{plain(stored.name)}**")
                for page in pages:
                    _link(page, f"{PAGES[page][1]}", icon=":material/arrow_forward:")
        if jobs:
            st.subheader("Jobs")
            if any(job.snapshot().active for job, _ in jobs):
                _live_jobs()
            else:
                _draw_jobs()


@st.fragment(run_every=2.0)
def _live_jobs() -> None:
    _draw_jobs()


def _draw_jobs() -> None:
    from core.jobs import JobState, format_eta
    from ui.safe import plain

    for job, page in session_jobs()[:6]:
        snap = job.snapshot()
        if snap.active:
            st.progress(snap.fraction, text=f"{plain(snap.title)}: {snap.fraction * 100:.0f} %")
            st.caption(format_eta(snap.eta_s))
        else:
            word = {JobState.DONE: "done", JobState.FAILED: "failed", JobState.CANCELLED: "cancelled"}.get(
                snap.state, "ended")
            st.caption(f"{plain(snap.title)}: {word}")
        _link(page, f"Open on {PAGES[page][1]}", icon=":material/arrow_forward:")
