"""SQLAlchemy 2 models: the base and its column types, chat sessions, messages, one row per
model call and one per agent event. The other tables are in orm_rollups, orm_support and
orm_team."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only autoincrements INTEGER PRIMARY KEY; Postgres gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases. SQLite keeps no offset, so values are stored as
    UTC wall time there; a naive value given to us is taken to be UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class ChatSession(Base):
    """One conversation of one user; its id is also the LangGraph thread id."""

    __tablename__ = "chat_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    demo: Mapped[bool] = mapped_column(Boolean, default=False)
    # Ended on purpose ("End conversation", POST /sessions/{id}/close); a later message
    # (updated_at past it) reopens the conversation.
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_chat_sessions_user_updated", "user_id", "updated_at"),
        Index("ix_chat_sessions_updated", "updated_at"),
    )


class Message(Base):
    """A message shown in the chat transcript (the agent's own state lives in the checkpointer)."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("chat_sessions.id", ondelete="CASCADE")
    )
    turn: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        Index("ix_messages_session_turn", "session_id", "turn"),
        Index("ix_messages_created_at", "created_at"),
    )


class ModelCall(Base):
    """One model call: what it cost, how long it took and how full the context window was."""

    __tablename__ = "model_calls"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    user_id: Mapped[str] = mapped_column(String(128))
    session_id: Mapped[str] = mapped_column(String(64))
    turn: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    usage_source: Mapped[str] = mapped_column(String(16), default="provider")
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    cost_status: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    context_tokens: Mapped[int] = mapped_column(Integer, default=0)
    context_window: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    demo: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_model_calls_ts", "ts"),
        Index("ix_model_calls_user_ts", "user_id", "ts"),
        Index("ix_model_calls_session_turn", "session_id", "turn"),
        Index("ix_model_calls_model_ts", "model", "ts"),
        Index("ix_model_calls_cost_status_ts", "cost_status", "ts"),
        Index("ix_model_calls_latency", "latency_ms"),
        Index(
            "ix_model_calls_demo_ts",
            "ts",
            sqlite_where=text("demo = 1"),
            postgresql_where=text("demo"),
        ),
    )


EVENT_KINDS = (
    "memory_recall",
    "tool_call",
    "summarization",
    "context_guard",
    "budget_refusal",
    "turn_cancelled",
)


class AgentEvent(Base):
    """A timed agent step that is not a model call: a memory recall or a tool call."""

    __tablename__ = "agent_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    user_id: Mapped[str] = mapped_column(String(128))
    session_id: Mapped[str] = mapped_column(String(64))
    turn: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(24))  # one of EVENT_KINDS
    name: Mapped[str] = mapped_column(String(128))  # the tool's name; "memory" for recall
    latency_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    hits: Mapped[int | None] = mapped_column(Integer, nullable=True)  # memories recalled
    top_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Summarization events: the model, the request's tokens before and after, messages folded.
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tokens_before: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_after: Mapped[int | None] = mapped_column(Integer, nullable=True)
    messages_folded: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # JSON: recalled memories, a tool's arguments and result preview (shown on the chat page).
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_agent_events_kind_ts", "kind", "ts"),
        Index("ix_agent_events_session_turn", "session_id", "turn"),
        Index("ix_agent_events_ts", "ts"),
    )
