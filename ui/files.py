"""The file picker every page uses: upload (streamed to disk, hashed once) or open by path from the server folder.

The file picked becomes the session's current file (ui.state's working set): it stays open on every page (Video
Q&A and Summaries for a video, OCR for an image or PDF) after a page change, until another file is opened or it is
closed, also when the uploader itself comes back empty.
"""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from core.files import FileError, StoredFile, list_server_files, media_root, open_server_file, store_upload
from core.files.store import MEDIA_ROOT_ENV, file_limit_bytes
from core.library import record_file
from ui.safe import plain
from ui.state import (  # noqa: F401 - find_stored: the lookup by hash, offered here beside the picker too
    close_current,
    current_file,
    find_stored,
    get_cache,
    get_settings,
    honour_query_params,
    set_current,
    settings_or_stop,
    slot_of,
    take_notice,
)

TYPES = {
    "video": ["mp4", "mov", "mkv", "webm", "avi", "m4v", "mpg", "mpeg", "ts"],
    "document": ["png", "jpg", "jpeg", "tif", "tiff", "webp", "bmp", "gif", "pdf"],
}
_COPY_PATH = re.compile(r"""['"]?[^\s'"()]*(?:uploads|proxies)/[0-9a-f]{6,}[^\s'"()]*['"]?""")


def pick_file(kind: str, key: str) -> StoredFile | None:
    """Upload or server-folder picker; returns the session's current file of `kind` (the one just picked, or the
    one opened before on any page), or None.

    `kind`: "video" or "document" (images and PDFs).
    """
    settings = settings_or_stop()
    honour_query_params()
    slot = "video" if kind == "video" else "document"
    message = take_notice()
    if message:
        st.warning(plain(message))
    root = media_root(settings)
    source = st.radio("Source", ["Upload a file", "Open from the server folder"], horizontal=True,
                      key=f"{key}_source", label_visibility="collapsed")
    holding = False  # the picker itself shows the current file (no need to say which file is open)
    if source == "Upload a file":
        uploaded = st.file_uploader(
            f"Upload {'a video' if kind == 'video' else 'an image or PDF'} (up to {settings.max_upload_mb} MiB)",
            type=TYPES[kind], key=f"{key}_upload", max_upload_size=settings.max_upload_mb,
            on_change=_upload_changed, args=(key, slot),
            help="The file is saved on the server and analysed there. Larger files: put them in the server folder "
                 f"({MEDIA_ROOT_ENV}) and open them by path.",
        )
        if uploaded is not None:
            marker = (uploaded.file_id, uploaded.name)
            if st.session_state.get(f"{key}_marker") != marker:
                try:
                    with st.spinner(f"Saving {plain(uploaded.name)}..."):
                        stored = store_upload(uploaded, uploaded.name, settings.cache_dir,
                                              settings.max_upload_mb * 1024 * 1024, file_limit_bytes(settings))
                except FileError as exc:
                    st.error(plain(exc))
                    st.session_state.pop(f"{key}_marker", None)
                    return None
                st.session_state[f"{key}_marker"] = marker
                st.session_state[f"{key}_sha"] = stored.sha256
                set_current(stored)
                _record(stored)
            current = current_file(slot)
            holding = current is not None and current.sha256 == st.session_state.get(f"{key}_sha")
    elif root is None:
        st.info(f"Opening files by path is off. To analyse files too large to upload, set the environment variable "
                f"`{MEDIA_ROOT_ENV}` to the server folder that holds them and restart the dashboard. Only files inside "
                "that folder can be opened.")
    else:
        wanted = ("video",) if kind == "video" else ("image", "pdf")
        files = list_server_files(root, wanted)
        st.caption(f"Files in the server folder `{root}`")
        choice = st.selectbox("File", files, index=None, key=f"{key}_server_choice",
                              placeholder="Choose a file" if files else "No matching files in the folder")
        typed = st.text_input("…or type a path inside the folder", key=f"{key}_server_path")
        target = typed.strip() or choice
        if target:
            try:
                stored = open_server_file(target, root)
            except FileError as exc:
                st.error(plain(exc))
                return None
            if slot_of(stored.kind) != slot:
                st.error(f"{plain(stored.name)} is not {'a video' if slot == 'video' else 'an image or a PDF'}.")
                return None
            if st.session_state.get(f"{key}_server_sha") != stored.sha256:
                st.session_state[f"{key}_server_sha"] = stored.sha256
                set_current(stored)
                _record(stored)
            holding = True
    current = current_file(slot)
    if current is not None and not holding:
        cols = st.columns([5, 1], vertical_alignment="center")
        where = {"upload": "uploaded", "server": "from the server folder"}.get(current.origin, "")
        cols[0].caption(f"Open: **{plain(current.name)}** ({where + ', ' if where else ''}"
                        f"{current.size_bytes / 1024**2:.1f} MiB). Pick another file above to change it.")
        cols[1].button("Close", key=f"{key}_close", on_click=close_current, args=(slot,),
                       icon=":material/close:", help="Close this file on every page")
    return current


def _upload_changed(key: str, slot: str) -> None:
    """The user emptied the uploader (its ×): the file it held is closed, on every page."""
    if st.session_state.get(f"{key}_upload") is None:
        current = current_file(slot)
        if current is not None and current.sha256 == st.session_state.get(f"{key}_sha"):
            close_current(slot)
        st.session_state.pop(f"{key}_marker", None)
        st.session_state.pop(f"{key}_sha", None)


def shown_text(text: object, stored: StoredFile) -> str:
    """`text` (an error message quoting the file) with the server's copy of the file named by the user's file name,
    in the dashboard's words and made safe for Markdown (ui.safe.shown): messages say "talk.mp4", not
    "cache/uploads/<hash>.mp4"."""
    from core.errors import for_web

    out = for_web(text)
    path = Path(stored.path)
    for form in sorted({str(path), str(path.resolve()) if path.exists() else str(path), path.name}, key=len,
                       reverse=True):
        if form and form != stored.name:
            out = out.replace(form, stored.name)
    # what is left of the copy's path where a message cut it short (e.g. FFmpeg's quoted path)
    out = _COPY_PATH.sub(lambda _m: stored.name, out)
    return plain(out)


def _record(stored: StoredFile) -> None:
    try:
        record_file(get_cache(), stored.sha256, stored.name, stored.kind, stored.path, stored.size_bytes,
                    stored.origin, settings=get_settings())
    except Exception as exc:  # noqa: BLE001 - the library entry is a convenience; analysis goes on
        st.caption(f"Could not add the file to the library: {plain(exc)}")
