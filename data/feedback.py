"""End users' thumbs on assistant answers: stored first, then synced to LangSmith by the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

MAX_COMMENT_CHARS = 2000


class FeedbackInputError(ValueError):
    """Feedback that cannot be stored; the message is shown to the user as is."""


@dataclass(frozen=True, slots=True)
class Thumbs:
    message_id: int
    session_id: str
    turn: int
    user_id: str
    score: int  # 1 up, 0 down
    comment: str | None
    run_id: str | None
    updated_at: datetime
    sync_state: str  # pending | synced | failed | local


def set_thumbs(
    *,
    engine: Engine,
    message_id: int,
    user_id: str,
    score: int,
    comment: str | None = None,
    sync_enabled: bool = True,
) -> Thumbs:
    """Store (or replace: the latest wins) the thumbs of `user_id` on an assistant answer.

    Raises FeedbackInputError, writing nothing, for a score other than 0 or 1, a comment over
    MAX_COMMENT_CHARS, an unknown message, a user message, or another user's conversation.
    The row is marked "pending" for the LangSmith outbox, or "local" when `sync_enabled` is
    False (no LangSmith configured) or the answer has no run id to attach to."""
    raise NotImplementedError


def thumbs_for_session(*, engine: Engine, session_id: str) -> dict[int, Thumbs]:
    """The thumbs of one conversation, keyed by message id (what the chat page shows)."""
    raise NotImplementedError
