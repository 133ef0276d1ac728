"""The Home page: what is available (model, device, GPU, OCR engines), cache statistics, navigation."""

from __future__ import annotations

import streamlit as st

from core.errors import for_web
from core.status import cache_location, environment
from ui.safe import plain, shown
from ui.state import get_cache, get_engine, settings_or_stop, sidebar_generation_params


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def render(pages: list[st.Page]) -> None:
    settings = settings_or_stop()
    sidebar_generation_params()
    st.title("VLScope")
    st.write("Understand long videos and documents with Qwen3-VL, on your own GPU box.")

    env = environment(settings)
    st.subheader("What is available")
    cols = st.columns(3)
    cols[0].metric("Device", env.device.upper())
    cols[1].metric("GPUs", str(len(env.gpus)))
    cols[2].metric("Model", "found" if env.model.available else "not found")
    for gpu in env.gpus:
        st.write(f"GPU: {gpu.name}, {_gib(gpu.memory_total_bytes)}")
    if not env.gpus:
        st.info("No NVIDIA GPU found: everything that does not need the model runs on the CPU; the model runs on the CPU slowly.")

    st.markdown(f"**Model** `{settings.model}`")
    engine = get_engine()
    info = engine.info()
    if env.model.available:
        st.success(f"Model files {env.model.message}.")
        if info.loaded:
            st.write(f"Loaded on {info.device} ({info.dtype}, {info.attn_implementation}, quantisation {info.quantization}).")
            if getattr(info, "architecture", ""):
                st.text(f"Architecture: {info.architecture}")
            if info.decoding:
                # plain text: fallback reasons quote error messages (in web words, without class names);
                # it says whether the fast decoder covers this architecture or why the plain path runs
                st.text(f"Decoding: {for_web(info.decoding)}")
        elif info.error:
            st.error(shown(info.error))
        elif st.button("Load the model now", key="load_model"):
            with st.spinner("Loading the model..."):
                try:
                    engine.load()
                    st.rerun()
                except Exception as exc:  # noqa: BLE001 - shown to the user, app keeps running
                    st.error(f"The model could not be loaded: {shown(exc)}")
    else:
        st.warning(shown(env.model.message))
        st.caption("Without the model, scene cuts, motion, on-screen text and OCR still work; questions, captions and "
                   "summaries need it.")

    st.markdown("**OCR engines**")
    for eng in env.ocr_engines:
        langs = ", ".join(eng.languages) if eng.languages else "none"
        icon = ":material/check_circle:" if eng.available else ":material/cancel:"
        st.markdown(f"{icon} **{eng.name}**: languages {langs}. {eng.message}")

    st.subheader("Result cache")
    stats = get_cache().stats()
    c = st.columns(4)
    c[0].metric("Entries", stats.entries)
    c[1].metric("Files analysed", stats.inputs)
    c[2].metric("Size", f"{stats.volume_bytes / 1024**2:.1f} MiB", help=f"limit {_gib(stats.size_limit_bytes)}")
    c[3].metric("Hits / misses", f"{stats.hits} / {stats.misses}")
    where = cache_location(settings)
    if settings.cache_backend == "redis":
        st.markdown(f"Results are kept on {plain(where)}.")
    else:
        st.markdown("Results are kept in")
        st.code(str(settings.cache_dir), language=None)
        st.caption("The one folder of the dashboard, the vlscope commands and the API, wherever they are started "
                   "(setting `cache_dir`, VLSCOPE\\_CACHE\\_DIR): an analysis made in a terminal is in the Library too.")
    if stats.corrupt:
        st.warning(f"{stats.corrupt} unreadable cache entries were skipped and removed.")

    st.subheader("Pages")
    if not pages:
        st.write("More pages appear here as they are ready.")
    for page in pages:
        st.page_link(page)
