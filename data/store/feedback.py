"""End users' thumbs on assistant answers: stored first, then synced to LangSmith by the outbox."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from data.store.orm import ChatSession, Message, ModelCall, utcnow
from data.store.orm_team import FeedbackThumbs

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


def clean_comment(comment: str | None) -> str | None:
    """A comment as stored: trimmed, None when blank. Raises ValueError over the limit (the
    callers turn it into their own input error)."""
    text = (comment or "").strip()
    if len(text) > MAX_COMMENT_CHARS:
        raise ValueError(
            f"The comment is {len(text):,} characters long; the limit is {MAX_COMMENT_CHARS:,}."
        )
    return text or None


def initial_sync_state(*, sync_enabled: bool, run_id: str | None) -> str:
    """ "pending" for the outbox, or "local" when there is no LangSmith or no run to attach to."""
    return "pending" if sync_enabled and run_id else "local"


def dialect_insert(engine: Engine, table: Any) -> Any:
    """An INSERT that supports ON CONFLICT on this database (SQLite and Postgres spell it alike
    but in different dialect modules)."""
    module = postgresql if engine.dialect.name == "postgresql" else sqlite
    return module.insert(table)


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
    if isinstance(score, bool) or score not in (0, 1):
        raise FeedbackInputError("Thumbs must be up (1) or down (0).")
    try:
        text = clean_comment(comment)
    except ValueError as error:
        raise FeedbackInputError(str(error)) from None
    now = utcnow()
    with engine.begin() as connection:
        message = connection.execute(
            select(
                Message.session_id,
                Message.turn,
                Message.role,
                Message.run_id,
                Message.created_at,
                ChatSession.user_id,
            )
            .join(ChatSession, ChatSession.id == Message.session_id)
            .where(Message.id == message_id)
        ).first()
        if message is None:
            raise FeedbackInputError("That answer no longer exists; reload the conversation.")
        if message.role != "assistant":
            raise FeedbackInputError("Only the assistant's answers take thumbs.")
        if message.user_id != user_id:
            raise FeedbackInputError("That answer belongs to another user's conversation.")
        state = initial_sync_state(sync_enabled=sync_enabled, run_id=message.run_id)
        # A new value starts a fresh round of attempts; the feedback id and `synced_at` stay,
        # so the worker updates the LangSmith feedback it created before.
        changes = {
            "score": score,
            "comment": text,
            "updated_at": now,
            "sync_state": state,
            "attempts": 0,
            "next_attempt_at": now,
            "last_error": None,
        }
        # The model that gave the answer: the turn's last successful chat call (fixed when the
        # thumbs is first given, as the page filters thumbs by it).
        chat_model = connection.execute(
            select(ModelCall.model)
            .where(
                ModelCall.session_id == message.session_id,
                ModelCall.turn == message.turn,
                ModelCall.purpose == "chat",
                ModelCall.status == "ok",
            )
            .order_by(ModelCall.ts.desc(), ModelCall.id.desc())
            .limit(1)
        ).scalar()
        statement = dialect_insert(engine, FeedbackThumbs).values(
            message_id=message_id,
            session_id=message.session_id,
            turn=message.turn,
            user_id=user_id,
            run_id=message.run_id,
            answered_at=message.created_at,
            chat_model=chat_model,
            created_at=now,
            version=1,
            feedback_uuid=str(uuid.uuid4()),
            synced_at=None,
            **changes,
        )
        statement = statement.on_conflict_do_update(
            index_elements=[FeedbackThumbs.message_id],
            set_={**changes, "version": FeedbackThumbs.version + 1},
        )
        connection.execute(statement)
    return Thumbs(
        message_id=message_id,
        session_id=message.session_id,
        turn=message.turn,
        user_id=user_id,
        score=score,
        comment=text,
        run_id=message.run_id,
        updated_at=now,
        sync_state=state,
    )


def thumbs_for_session(*, engine: Engine, session_id: str) -> dict[int, Thumbs]:
    """The thumbs of one conversation, keyed by message id (what the chat page shows)."""
    t = FeedbackThumbs.__table__.c
    query = select(
        t.message_id,
        t.session_id,
        t.turn,
        t.user_id,
        t.score,
        t.comment,
        t.run_id,
        t.updated_at,
        t.sync_state,
    ).where(t.session_id == session_id)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return {int(row.message_id): Thumbs(*row) for row in rows}
