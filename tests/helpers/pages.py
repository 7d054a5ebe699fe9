"""Finding the chat page's widgets in an AppTest."""

from __future__ import annotations

from typing import Any

from streamlit.testing.v1 import AppTest


def session_box_of(at: AppTest) -> Any:
    """The chat page's session picker (its key follows the list of sessions)."""
    return next(s for s in at.sidebar.selectbox if s.label == "Session")
