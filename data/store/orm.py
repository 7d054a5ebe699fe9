"""SQLAlchemy 2 models: chat sessions, messages and one row per model call."""

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

    __table_args__ = (Index("ix_chat_sessions_user_updated", "user_id", "updated_at"),)


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


class RollupDirty(Base):
    """UTC hours whose rollups must be recomputed (filled by triggers on model_calls)."""

    __tablename__ = "rollup_dirty"
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)


class RollupHourly(Base):
    """Exact sums per hour, model, provider, purpose, status and cost status."""

    __tablename__ = "rollup_hourly"
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    cost_status: Mapped[str] = mapped_column(String(16), primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[float] = mapped_column(Float)


class RollupSessionHourly(Base):
    """Exact per-session figures per hour and model (sums, maxima, first and last call)."""

    __tablename__ = "rollup_session_hourly"
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    calls: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[float] = mapped_column(Float)
    unpriced_calls: Mapped[int] = mapped_column(BigInteger)
    summarizations: Mapped[int] = mapped_column(BigInteger)
    max_turn: Mapped[int] = mapped_column(Integer)
    first_call: Mapped[datetime] = mapped_column(UTCDateTime())
    last_call: Mapped[datetime] = mapped_column(UTCDateTime())
    peak_context_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    chat_calls: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (
        Index("ix_rollup_session_hourly_session", "session_id", "hour"),
        Index("ix_rollup_session_hourly_user_hour", "user_id", "hour"),
    )


# The columns the per-session tables sort by server-side (each has a (model, column,
# session_id) index, see migration 0010).
SESSION_SORTS = (
    "user_id",
    "first_call",
    "last_call",
    "max_turn",
    "calls",
    "tokens",
    "cost_usd",
    "unpriced_calls",
    "peak_context_percent",
)


class RollupSessions(Base):
    """Exact totals of one session over all its calls, per model and for all models ('*'):
    recomputed from rollup_session_hourly whenever one of its hours changes."""

    __tablename__ = "rollup_sessions"
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    # The session's chat model (most chat calls, then the name); on the '*' row only.
    chat_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    calls: Mapped[int] = mapped_column(BigInteger)
    chat_calls: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[float] = mapped_column(Float)
    unpriced_calls: Mapped[int] = mapped_column(BigInteger)
    summarizations: Mapped[int] = mapped_column(BigInteger)
    max_turn: Mapped[int] = mapped_column(Integer)
    first_call: Mapped[datetime] = mapped_column(UTCDateTime())
    last_call: Mapped[datetime] = mapped_column(UTCDateTime())
    peak_context_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_p95_ms: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        *[Index(f"ix_rollup_sessions_{c}", "model", c, "session_id") for c in SESSION_SORTS],
        Index("ix_rollup_sessions_user", "user_id", "model"),
        # Counting a range's sessions reads this index only.
        Index("ix_rollup_sessions_span", "model", "first_call", "last_call"),
        # Finding the sessions that straddle a range's start reads this index only.
        Index("ix_rollup_sessions_span_end", "model", "last_call", "first_call", "session_id"),
    )


class RollupUsers(Base):
    """Exact totals of one user over all their sessions, per model and for all models ('*')."""

    __tablename__ = "rollup_users"
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    sessions: Mapped[int] = mapped_column(BigInteger)
    calls: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[float] = mapped_column(Float)
    unpriced_calls: Mapped[int] = mapped_column(BigInteger)
    first_call: Mapped[datetime] = mapped_column(UTCDateTime())
    last_call: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_rollup_users_model_first", "model", "first_call"),)


class RollupDirtyDays(Base):
    """UTC days whose day percentiles wait to be recomputed; until then a read computes them
    from the raw rows, so a view is exact either way."""

    __tablename__ = "rollup_dirty_days"
    day: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)


class RollupContextBins(Base):
    """Successful chat calls per hour, model and 5-point context % bin."""

    __tablename__ = "rollup_context_bins"
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    bin: Mapped[int] = mapped_column(Integer, primary_key=True)
    calls: Mapped[int] = mapped_column(BigInteger)


class RollupPercentiles(Base):
    """Exact p50/p95/p99 of one metric in one hour or day bucket, per model and for '*'."""

    __tablename__ = "rollup_percentiles"
    unit: Mapped[str] = mapped_column(String(8), primary_key=True)
    metric: Mapped[str] = mapped_column(String(24), primary_key=True)
    bucket: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
    p50: Mapped[float | None] = mapped_column(Float, nullable=True)
    p95: Mapped[float | None] = mapped_column(Float, nullable=True)
    p99: Mapped[float | None] = mapped_column(Float, nullable=True)


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


ORDER_STATUSES = ("placed", "paid", "shipped", "delivered", "returned", "cancelled")


class Order(Base):
    """A customer's order, as the support tools look it up (demo rows are flagged)."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_number: Mapped[str] = mapped_column(String(16), unique=True)  # "A-10234"
    user_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # one of ORDER_STATUSES
    # JSON list of {"name", "qty", "unit_usd"}: read whole, never queried inside.
    items: Mapped[str] = mapped_column(Text)
    total_usd: Mapped[float] = mapped_column(Float)
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    carrier: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tracking_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    demo: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_orders_user_placed", "user_id", "placed_at"),)


SYNC_STATES = ("pending", "synced", "failed", "local")
TICKET_KINDS = ("ticket", "escalation")
TICKET_PRIORITIES = ("low", "normal", "high", "urgent")


class SupportTicket(Base):
    """A ticket or a hand-over to a human that the agent opened during a chat turn."""

    __tablename__ = "support_tickets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(128))
    session_id: Mapped[str] = mapped_column(String(64))
    turn: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # one of TICKET_KINDS
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(String(16))  # one of TICKET_PRIORITIES
    status: Mapped[str] = mapped_column(String(16), default="open")  # one of TICKET_STATUSES
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When the promised response is due (TICKET_RESPONSE_TIME / ESCALATION_RESPONSE_TIME of
    # business hours after it was opened); None for tickets older than the promise.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Webhook outbox: the delivery id is fixed when the ticket is written, so a retry is the
    # same delivery to the receiver. "local" when no TICKET_WEBHOOK_URL was set at the time.
    webhook_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    sync_state: Mapped[str] = mapped_column(String(16), default="local")  # SYNC_STATES
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_support_tickets_user_created", "user_id", "created_at"),
        Index("ix_support_tickets_status_created", "status", "created_at"),
        Index("ix_support_tickets_outbox", "sync_state", "next_attempt_at"),
        Index("ux_support_tickets_webhook_uuid", "webhook_uuid", unique=True),
    )


TICKET_STATUSES = ("open", "in_progress", "resolved")


class TicketHistory(Base):
    """Every change of a ticket: its creation and each status move, who made it, and the note."""

    __tablename__ = "ticket_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("support_tickets.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(128))  # "agent" for the creation in a chat turn
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_ticket_history_ticket_at", "ticket_id", "at"),)


class FeedbackThumbs(Base):
    """An end user's thumbs on one assistant answer (latest wins), and its LangSmith outbox
    state. `version` grows on every change, so the sync worker can tell whether what it pushed
    is still the latest value."""

    __tablename__ = "feedback_thumbs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    session_id: Mapped[str] = mapped_column(String(64))
    turn: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[str] = mapped_column(String(128))
    score: Mapped[int] = mapped_column(Integer)  # 1 up, 0 down
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Outbox: the LangSmith feedback id is fixed when the row is created, so a retry or an
    # update always addresses the same LangSmith feedback.
    feedback_uuid: Mapped[str] = mapped_column(String(36), unique=True)
    sync_state: Mapped[str] = mapped_column(String(16))  # one of SYNC_STATES
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Copied when the thumbs is first given (migration 0012), so the feedback page filters by
    # one index range: the answer's message time, and the model of the turn's last successful
    # chat call (None when the turn made none, as for an answer from the response cache).
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    chat_model: Mapped[str | None] = mapped_column(String(128), nullable=True)

    __table_args__ = (
        Index("ix_feedback_thumbs_session", "session_id"),
        Index("ix_feedback_thumbs_outbox", "sync_state", "next_attempt_at"),
        Index("ix_feedback_thumbs_answered", "answered_at"),
        Index("ix_feedback_thumbs_model_answered", "chat_model", "answered_at"),
        Index("ix_feedback_thumbs_user_answered", "user_id", "answered_at"),
        Index("ix_feedback_thumbs_updated", "updated_at", "id"),
    )


class ReviewItem(Base):
    """A conversation in the review queue: how many independent scores it needs, and the
    reviewer it is reserved for (until that reviewer has scored it)."""

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("chat_sessions.id", ondelete="CASCADE"), unique=True
    )
    reviews_required: Mapped[int] = mapped_column(Integer)
    assigned_to: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (Index("ix_review_items_assigned", "assigned_to"),)


CLAIM_END_REASONS = ("saved", "released", "expired")


class ReviewClaim(Base):
    """A reviewer's claim on an item. Rows are kept after they end (with the reason), so a late
    save can be told why its claim is gone; a partial unique index allows one open claim per
    item."""

    __tablename__ = "review_claims"

    token: Mapped[str] = mapped_column(String(36), primary_key=True)
    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("review_items.id", ondelete="CASCADE"))
    reviewer: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)

    __table_args__ = (
        Index(
            "ux_review_claims_open_item",
            "item_id",
            unique=True,
            sqlite_where=ended_at.is_(None),
            postgresql_where=ended_at.is_(None),
        ),
        Index("ix_review_claims_reviewer_open", "reviewer", "ended_at"),
    )


class ReviewScore(Base):
    """One reviewer's 1-5 score of a queued conversation, and its LangSmith outbox state."""

    __tablename__ = "review_scores"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(BigId, ForeignKey("review_items.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(String(64))
    reviewer: Mapped[str] = mapped_column(String(128))
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    feedback_uuid: Mapped[str] = mapped_column(String(36), unique=True)
    sync_state: Mapped[str] = mapped_column(String(16))  # one of SYNC_STATES
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ux_review_scores_item_reviewer", "item_id", "reviewer", unique=True),
        Index("ix_review_scores_reviewer_created", "reviewer", "created_at"),
        Index("ix_review_scores_created", "created_at"),
        Index("ix_review_scores_session", "session_id"),
        Index("ix_review_scores_outbox", "sync_state", "next_attempt_at"),
    )


MAINTENANCE_TASKS = ("analyze", "vacuum", "retention", "backup", "backup_check")


class MaintenanceRun(Base):
    """One run of a maintenance task (data.store.maintain, data.store.backup): when, how it ended,
    what it touched. The status page shows the latest of each task."""

    __tablename__ = "maintenance_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(24))  # one of MAINTENANCE_TASKS
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # "running" | "ok" | "error"
    rows: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_maintenance_runs_task_started", "task", "started_at"),)


ROLES = ("admin", "analyst", "reviewer", "tester")


class User(Base):
    """A person who signs in: a role, an argon2 password hash (None for single sign-on only)
    and a disabled flag (users are disabled, never deleted, so the audit log keeps meaning)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)  # lower case
    email: Mapped[str | None] = mapped_column(String(254), unique=True, nullable=True)
    role: Mapped[str] = mapped_column(String(16))  # one of ROLES
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuthFailure(Base):
    """A failed sign-in, counted per user name and per address to throttle guessing (used when
    no Redis is configured; every replica sees the same rows)."""

    __tablename__ = "auth_failures"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime())
    scope: Mapped[str] = mapped_column(String(8))  # "user" or "address"
    key: Mapped[str] = mapped_column(String(256))

    __table_args__ = (Index("ix_auth_failures_scope_key_ts", "scope", "key", "ts"),)


class AuditEntry(Base):
    """One security-relevant action: who did what to what. Append-only (database triggers
    refuse UPDATE and DELETE)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(48))
    target: Mapped[str] = mapped_column(String(256), default="")
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON object

    __table_args__ = (
        Index("ix_audit_log_ts", "ts"),
        Index("ix_audit_log_actor_ts", "actor", "ts"),
        Index("ix_audit_log_action_ts", "action", "ts"),
    )


BUDGET_SCOPES = ("user", "prefix", "all")
BUDGET_PERIODS = ("day", "month")


class Budget(Base):
    """A spending limit in USD for one user, the users whose id starts with a prefix, or
    everyone, per UTC day or calendar month (data/workflows/budgets.py). Deleting one deactivates
    it."""

    __tablename__ = "budgets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    scope_kind: Mapped[str] = mapped_column(String(8))  # one of BUDGET_SCOPES
    scope_value: Mapped[str] = mapped_column(String(128))  # "" for "all"
    period: Mapped[str] = mapped_column(String(8))  # one of BUDGET_PERIODS
    limit_usd: Mapped[float] = mapped_column(Float)
    warn_fraction: Mapped[float] = mapped_column(Float)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128))

    __table_args__ = (Index("ix_budgets_active", "active"),)


class BudgetChange(Base):
    """Every create, update and delete of a budget, with the values before and after (JSON)."""

    __tablename__ = "budget_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    budget_id: Mapped[int] = mapped_column(BigId)
    ts: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))  # create | update | delete
    before: Mapped[str | None] = mapped_column(Text, nullable=True)
    after: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_budget_changes_budget_ts", "budget_id", "ts"),)


class BudgetReservation(Base):
    """The estimated cost of one model call in flight, counted against every budget of its
    user until the call's row is recorded (or the reservation expires)."""

    __tablename__ = "budget_reservations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128))
    amount_usd: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_budget_reservations_user_expires", "user_id", "expires_at"),
        Index("ix_budget_reservations_expires", "expires_at"),
    )


class BudgetAlert(Base):
    """A threshold crossing (warning or exceeded) of one budget in one period: the unique index
    makes each crossing alerted once, across replicas."""

    __tablename__ = "budget_alerts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    budget_id: Mapped[int] = mapped_column(BigId)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    level: Mapped[str] = mapped_column(String(16))  # warning | exceeded
    spent_usd: Mapped[float] = mapped_column(Float)
    limit_usd: Mapped[float] = mapped_column(Float)
    ts: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivery_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ux_budget_alerts_crossing", "budget_id", "period_start", "level", unique=True),
    )
