"""Chat input rules: every message has a defined outcome."""

from __future__ import annotations

import pytest

from agent.service import ChatInputError, clean_message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Hello  ", "Hello"),
        ("line one\nline two", "line one\nline two"),
        ("bell\x07 and nul\x00 removed", "bell and nul removed"),
        ("Cafe\u0301", "Café"),  # NFC
        ("x" * 8000, "x" * 8000),
    ],
)
def test_clean_message_accepts(raw: str, expected: str) -> None:
    assert clean_message(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "Type a message first."),
        ("", "The message is empty."),
        (" \n\t\x00", "The message is empty."),
        ("x" * 8001, "The message has 8,001 characters; the limit is 8,000."),
    ],
)
def test_clean_message_rejects(raw: str | None, reason: str) -> None:
    with pytest.raises(ChatInputError) as caught:
        clean_message(raw)
    assert str(caught.value) == reason
