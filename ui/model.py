"""What a page shows about the model: whether questions/captions can run, and if not, why and how to fix it."""

from __future__ import annotations

import streamlit as st

from core.settings import Settings
from ui.state import get_engine


def model_ready(settings: Settings, what: str) -> bool:
    """True when the model can be used (found, not failed); otherwise explain what `what` needs and how to get it."""
    from core.status import model_status

    info = get_engine().info()
    if info.error:
        st.warning(f"**{what} need the model, which failed to load.** {info.error}", icon=":material/smart_toy:")
        return False
    if info.loaded:
        return True
    status = model_status(settings)
    if status.available:
        return True
    st.warning(f"**{what} need the model, which is not available.** {status.message}", icon=":material/smart_toy:")
    st.caption("Get it: download the weights once (`huggingface-cli download Qwen/Qwen3-VL-4B-Instruct`) or point "
               "`VLSCOPE_MODEL` at a local folder holding them, then restart the dashboard. Everything on this page "
               "that does not need the model keeps working.")
    return False
