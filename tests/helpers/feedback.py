"""Conversations with answers to give feedback on, for the feedback and review tests."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import Engine, insert, select

from data.store.orm import ChatSession, Message, utcnow


def add_conversations(
    engine: Engine, count: int, *, prefix: str = "c", traced: bool = True, turns: int = 1
) -> list[str]:
    """`count` conversations of one user each, `turns` question-answer turns per conversation;
    each answer has a LangSmith run id when `traced`. Their session ids, in order."""
    now = utcnow()
    ids = [f"{prefix}-{i:05d}" for i in range(count)]
    sessions = [
        {"id": s, "user_id": f"user-{i % 7}", "title": s, "created_at": now, "updated_at": now}
        for i, s in enumerate(ids)
    ]
    messages = [
        {
            "session_id": s,
            "turn": turn,
            "role": role,
            "content": f"{role} {turn}",
            "created_at": now + timedelta(seconds=turn),
            "run_id": str(uuid.uuid4()) if traced and role == "assistant" else None,
        }
        for s in ids
        for turn in range(1, turns + 1)
        for role in ("user", "assistant")
    ]
    with engine.begin() as connection:
        connection.execute(insert(ChatSession), sessions)
        connection.execute(insert(Message), messages)
    return ids


def answers(engine: Engine) -> list[tuple[int, str, str | None]]:
    """(message id, user id, run id) of every assistant message."""
    with engine.connect() as connection:
        return [
            (int(r[0]), str(r[1]), r[2])
            for r in connection.execute(
                select(Message.id, ChatSession.user_id, Message.run_id)
                .join(ChatSession, ChatSession.id == Message.session_id)
                .where(Message.role == "assistant")
                .order_by(Message.id)
            )
        ]
