"""What a page shows about the model: whether questions/captions can run, and if not, why and how to fix it."""

from __future__ import annotations

import streamlit as st

from core.settings import Settings
from ui.safe import shown
from ui.state import get_engine


def model_ready(settings: Settings, what: str, compact: bool = False) -> bool:
    """True when the model can be used (found, not failed); otherwise explain what `what` needs and how to get it.

    The explanation is one box: the cause and the fix (the one download command, from core.status). `compact`:
    one line with the details folded away, for a section that sits beside other results.
    """
    from core.status import model_status

    info = get_engine().info()
    if info.loaded:
        return True
    if info.error:
        head, body = f"{what} need the model, which failed to load.", shown(info.error)
    else:
        status = model_status(settings)
        if status.available:
            return True
        head, body = f"{what} need the model, which is not available.", shown(status.message)
    rest = ("Everything on this page that does not need the model keeps working. After getting the model, restart "
            "the dashboard.")
    if compact:
        with st.expander(head, icon=":material/smart_toy:"):
            st.markdown(body)
            st.caption(rest)
    else:
        st.warning(f"**{head}** {body} {rest}", icon=":material/smart_toy:")
    return False
