"""The process's one `Runtime` (settings, result cache, engine, OCR engines, jobs) for every browser
session, the sign-in gate and the sidebar. Pages call `get_runtime()` and its services (core/app)."""

from __future__ import annotations

import streamlit as st

from core.app import Runtime
from core.cache import CacheBackend
from core.settings import Settings, SettingsError, load_settings
from core.vlm import Engine, GenerationParams


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
        max_new = st.number_input("Max new tokens", min_value=1, max_value=32768, value=settings.max_new_tokens, step=64,
                                  key="gen_max_new_tokens")
        defaults = GenerationParams()
        temperature = st.slider("Temperature (0 = greedy)", 0.0, 2.0, defaults.temperature, 0.05, key="gen_temperature")
        top_p = st.slider("Top p", 0.05, 1.0, defaults.top_p, 0.05, key="gen_top_p")
    return GenerationParams(max_new_tokens=int(max_new), temperature=float(temperature), top_p=float(top_p))
