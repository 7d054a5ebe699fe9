"""Chat sessions and transcripts: what the chat page lists, resumes and writes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, case, func, insert, select, update

from data.models import AgentEvent, ChatSession, Message, ModelCall, utcnow

MAX_MESSAGE_CHARS = 8000


@dataclass(frozen=True, slots=True)
class SessionSummary:
    id: str
    user_id: str
    title: str
    created_at: datetime
    updated_at: datetime
    turns: int


@dataclass(frozen=True, slots=True)
class TurnStats:
    """What the model calls of one turn used (all purposes, summarization included)."""

    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None when any call of the turn is unpriced
    latency_ms: float
    context_percent: float | None
    errors: int


@dataclass(frozen=True, slots=True)
class TranscriptMessage:
    id: int  # the message row; thumbs are stored against it
    turn: int
    role: str
    content: str
    created_at: datetime
    run_id: str | None


def list_sessions(*, engine: Engine, user_id: str, limit: int = 200) -> list[SessionSummary]:
    """The user's sessions, newest activity first."""
    turns = (
        select(func.count())
        .where(Message.session_id == ChatSession.id, Message.role == "user")
        .scalar_subquery()
    )
    query = (
        select(ChatSession, turns)
        .where(ChatSession.user_id == user_id)
        .order_by(ChatSession.updated_at.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        SessionSummary(
            id=r.id,
            user_id=r.user_id,
            title=r.title,
            created_at=r.created_at,
            updated_at=r.updated_at,
            turns=int(r[-1] or 0),
        )
        for r in rows
    ]


def get_session(*, engine: Engine, session_id: str) -> SessionSummary | None:
    with engine.connect() as connection:
        row = connection.execute(select(ChatSession).where(ChatSession.id == session_id)).first()
    if row is None:
        return None
    return SessionSummary(
        id=row.id,
        user_id=row.user_id,
        title=row.title,
        created_at=row.created_at,
        updated_at=row.updated_at,
        turns=0,
    )


def start_turn(*, engine: Engine, session_id: str, user_id: str, text: str) -> int:
    """Create the session if new, store the user's message and return its turn number."""
    now = utcnow()
    with engine.begin() as connection:
        owner = connection.execute(
            select(ChatSession.user_id).where(ChatSession.id == session_id)
        ).scalar_one_or_none()
        if owner is None:
            title = " ".join(text.split())[:60]
            connection.execute(
                insert(ChatSession).values(
                    id=session_id,
                    user_id=user_id,
                    title=title,
                    created_at=now,
                    updated_at=now,
                    demo=False,
                )
            )
        elif owner != user_id:
            raise PermissionError(f"session {session_id} belongs to another user")
        last = connection.execute(
            select(func.max(Message.turn)).where(Message.session_id == session_id)
        ).scalar_one_or_none()
        turn = int(last or 0) + 1
        connection.execute(
            insert(Message).values(
                session_id=session_id, turn=turn, role="user", content=text, created_at=now
            )
        )
        connection.execute(
            update(ChatSession).where(ChatSession.id == session_id).values(updated_at=now)
        )
    return turn


def add_assistant_message(
    *, engine: Engine, session_id: str, turn: int, text: str, run_id: str | None
) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(Message).values(
                session_id=session_id,
                turn=turn,
                role="assistant",
                content=text,
                created_at=utcnow(),
                run_id=run_id,
            )
        )


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """A memory recall, tool call or summarization of one turn, as the chat page shows it."""

    kind: str
    name: str
    latency_ms: float
    status: str
    error: str | None
    hits: int | None
    top_score: float | None
    tokens_before: int | None
    tokens_after: int | None
    messages_folded: int | None
    detail: dict[str, Any] = field(default_factory=dict)


def turn_events(*, engine: Engine, session_id: str) -> dict[int, list[TurnEvent]]:
    """The agent events of a session by turn, in the order they happened."""
    e = AgentEvent.__table__.c
    query = (
        select(
            e.turn,
            e.kind,
            e.name,
            e.latency_ms,
            e.status,
            e.error,
            e.hits,
            e.top_score,
            e.tokens_before,
            e.tokens_after,
            e.messages_folded,
            e.detail,
        )
        .where(e.session_id == session_id)
        .order_by(e.turn, e.id)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    out: dict[int, list[TurnEvent]] = {}
    for row in rows:
        try:
            detail = json.loads(row.detail) if row.detail else {}
        except ValueError:
            detail = {}
        out.setdefault(int(row.turn), []).append(
            TurnEvent(
                kind=row.kind,
                name=row.name,
                latency_ms=float(row.latency_ms),
                status=row.status,
                error=row.error,
                hits=row.hits,
                top_score=row.top_score,
                tokens_before=row.tokens_before,
                tokens_after=row.tokens_after,
                messages_folded=row.messages_folded,
                detail=detail if isinstance(detail, dict) else {},
            )
        )
    return out


def transcript(*, engine: Engine, session_id: str) -> list[TranscriptMessage]:
    query = (
        select(
            Message.id,
            Message.turn,
            Message.role,
            Message.content,
            Message.created_at,
            Message.run_id,
        )
        .where(Message.session_id == session_id)
        .order_by(Message.turn, Message.id)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [TranscriptMessage(*row) for row in rows]


def turn_stats(*, engine: Engine, session_id: str) -> dict[int, TurnStats]:
    """Per-turn usage of a session, from its model-call rows. Tokens, latency and the call
    count are the model's (chat and summarize); the cost also includes the turn's embedding
    calls, which are part of what the answer cost."""
    unpriced = func.sum((ModelCall.cost_status == "unknown").cast(ModelCall.turn.type))
    llm = ModelCall.purpose != "embedding"
    percent = 100.0 * ModelCall.context_tokens / func.nullif(ModelCall.context_window, 0)

    def llm_sum(column: Any) -> Any:
        return func.sum(case((llm, column), else_=0))

    query = (
        select(
            ModelCall.turn,
            func.sum(case((llm, 1), else_=0)),
            llm_sum(ModelCall.input_tokens),
            llm_sum(ModelCall.output_tokens),
            func.sum(ModelCall.cost_usd),
            unpriced,
            llm_sum(ModelCall.latency_ms),
            func.max(case((llm, percent))),
            func.sum((ModelCall.status == "error").cast(ModelCall.turn.type)),
        )
        .where(ModelCall.session_id == session_id)
        .group_by(ModelCall.turn)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return {
        int(r[0]): TurnStats(
            calls=int(r[1]),
            input_tokens=int(r[2] or 0),
            output_tokens=int(r[3] or 0),
            cost_usd=None if r[5] else float(r[4] or 0.0),
            latency_ms=float(r[6] or 0.0),
            context_percent=None if r[7] is None else float(r[7]),
            errors=int(r[8] or 0),
        )
        for r in rows
    }


def session_calls(*, engine: Engine, session_id: str) -> pd.DataFrame:
    """Every model call of one session, in order, with its context % (for the viewer)."""
    c = ModelCall.__table__.c
    query = (
        select(
            c.ts,
            c.turn,
            c.purpose,
            c.model,
            c.input_tokens,
            c.cached_input_tokens,
            c.output_tokens,
            c.cost_usd,
            c.cost_status,
            c.latency_ms,
            c.ttft_ms,
            c.context_tokens,
            c.context_window,
            c.status,
            c.error,
        )
        .where(c.session_id == session_id)
        .order_by(c.ts, c.id)
    )
    with engine.connect() as connection:
        frame = pd.DataFrame(
            connection.execute(query).mappings().all(),
            columns=[col.name for col in query.selected_columns],
        )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="mixed")
    frame["context_percent"] = 100 * frame["context_tokens"] / frame["context_window"]
    return frame
