"""The file picker every page uses: upload (streamed to disk, hashed once) or open by path from the server folder."""

from __future__ import annotations

import streamlit as st

from core.files import FileError, StoredFile, list_server_files, media_root, open_server_file, store_upload
from core.files.store import MEDIA_ROOT_ENV, file_limit_bytes
from core.library import record_file
from ui.safe import plain
from ui.state import get_cache, get_settings, settings_or_stop

TYPES = {
    "video": ["mp4", "mov", "mkv", "webm", "avi", "m4v", "mpg", "mpeg", "ts"],
    "document": ["png", "jpg", "jpeg", "tif", "tiff", "webp", "bmp", "gif", "pdf"],
}


def pick_file(kind: str, key: str) -> StoredFile | None:
    """Upload or server-folder picker; returns the chosen file (kept across reruns in session state) or None.

    `kind`: "video" or "document" (images and PDFs).
    """
    settings = settings_or_stop()
    state_key = f"{key}_file"
    root = media_root(settings)
    source = st.radio("Source", ["Upload a file", "Open from the server folder"], horizontal=True,
                      key=f"{key}_source", label_visibility="collapsed")
    if source == "Upload a file":
        uploaded = st.file_uploader(
            f"Upload {'a video' if kind == 'video' else 'an image or PDF'} (up to {settings.max_upload_mb} MiB)",
            type=TYPES[kind], key=f"{key}_upload", max_upload_size=settings.max_upload_mb,
            help="The file is saved on the server in the cache folder and analysed there. Larger files: put them "
                 f"in the server folder ({MEDIA_ROOT_ENV}) and open them by path.",
        )
        if uploaded is None:
            st.session_state.pop(state_key, None)
            return None
        marker = (uploaded.file_id, uploaded.name)
        stored = st.session_state.get(state_key)
        if stored is None or st.session_state.get(f"{state_key}_marker") != marker:
            try:
                with st.spinner(f"Saving {plain(uploaded.name)}..."):
                    stored = store_upload(uploaded, uploaded.name, settings.cache_dir,
                                          settings.max_upload_mb * 1024 * 1024, file_limit_bytes(settings))
            except FileError as exc:
                st.error(plain(exc))
                st.session_state.pop(state_key, None)
                return None
            st.session_state[state_key] = stored
            st.session_state[f"{state_key}_marker"] = marker
            _record(stored)
        return stored
    if root is None:
        st.info(f"Opening files by path is off. To analyse files too large to upload, set the environment variable "
                f"`{MEDIA_ROOT_ENV}` to the server folder that holds them and restart the dashboard. Only files inside "
                "that folder can be opened.")
        return None
    wanted = ("video",) if kind == "video" else ("image", "pdf")
    files = list_server_files(root, wanted)
    st.caption(f"Files in the server folder `{root}`")
    choice = st.selectbox("File", files, index=None, key=f"{key}_server_choice",
                          placeholder="Choose a file" if files else "No matching files in the folder")
    typed = st.text_input("…or type a path inside the folder", key=f"{key}_server_path")
    target = typed.strip() or choice
    if not target:
        return None
    try:
        stored = open_server_file(target, root)
    except FileError as exc:
        st.error(plain(exc))
        return None
    if st.session_state.get(state_key) != stored:
        st.session_state[state_key] = stored
        _record(stored)
    return stored


def _record(stored: StoredFile) -> None:
    try:
        record_file(get_cache(), stored.sha256, stored.name, stored.kind, stored.path, stored.size_bytes,
                    stored.origin, settings=get_settings())
    except Exception as exc:  # noqa: BLE001 - the library entry is a convenience; analysis goes on
        st.caption(f"Could not add the file to the library: {plain(exc)}")
