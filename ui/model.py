"""What a page shows about the model: whether questions/captions can run, and if not, why and how to fix it."""

from __future__ import annotations

import re

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


def model_size(settings: Settings) -> tuple[str, bool]:
    """('2b' | '4b' | '8b', True when read from the model's name; else '4b', False) for the budget planner."""
    m = re.search(r"(?<![0-9])([248])B", settings.model, flags=re.IGNORECASE)
    return (m.group(1) + "b", True) if m else ("4b", False)


def model_precision(settings: Settings, gpu: bool) -> str:
    """The precision the planner should assume for these settings."""
    if settings.quantization in ("8bit", "4bit") and gpu:
        return settings.quantization
    if settings.dtype != "auto":
        return settings.dtype
    if "fp8" in settings.model.lower() and gpu:
        return "fp8"
    return "bf16" if gpu else "fp32"
