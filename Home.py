"""VLScope dashboard entry point: `streamlit run Home.py`. Builds the navigation; pages live in pages/."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.auth import current_user
from core.settings import SettingsError
from ui.auth import account_sidebar, signed_in
from ui.state import get_settings, settings_or_stop

# the favicon is an emoji, drawn by the browser itself: a `:material/...` favicon is fetched from a font CDN, which
# fails on a GPU box without internet (the navigation's icons below come from the font Streamlit serves itself)
st.set_page_config(page_title="VLScope", page_icon="🎬", layout="wide")

HERE = Path(__file__).parent

# (file, title, icon). A page is listed only once its file exists, i.e. once it works.
PAGES = [
    ("pages/video.py", "Video Q&A", ":material/movie:"),
    ("pages/summaries.py", "Summaries", ":material/list_alt:"),
    ("pages/ocr.py", "OCR", ":material/document_scanner:"),
    ("pages/library.py", "Library", ":material/folder_open:"),
    ("pages/gpu_monitor.py", "GPU monitor", ":material/memory:"),
]


def home() -> None:
    from ui.home import render

    render([p for p in available_pages()])


def available_pages() -> list[st.Page]:
    return [st.Page(str(HERE / path), title=title, icon=icon) for path, title, icon in PAGES if (HERE / path).is_file()]


def _signed_in() -> bool:
    try:
        return signed_in(get_settings())
    except SettingsError:
        return False


pages = [st.Page(home, title="Home", icon=":material/home:", default=True), *available_pages()]
# st.navigation on every run (Streamlit treats an app that skips it, with a pages/ folder, as an old-style
# multipage app and runs pages without this script); the page list stays hidden until sign-in.
page = st.navigation(pages, position="sidebar" if _signed_in() else "hidden")
# Sign-in first, when configured: the form, and the run stops until someone signs in (every page checks too).
settings = settings_or_stop()
account_sidebar(settings, current_user())
page.run()
