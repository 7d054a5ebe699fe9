"""Driving pages in an AppTest: one run that must not raise, and finding the chat page's
widgets."""

from __future__ import annotations

from typing import Any

from streamlit.testing.v1 import AppTest


def session_box_of(at: AppTest) -> Any:
    """The chat page's session picker (its key follows the list of sessions)."""
    return next(s for s in at.sidebar.selectbox if s.label == "Session")


def run(at: AppTest) -> AppTest:
    at.run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    return at
