"""The team's tables: thumbs and review scores, the review queue and its claims, users, sign-in
failures and the audit log, budgets with their changes, reservations and alerts, and
maintenance runs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from data.store.orm import Base, BigId, UTCDateTime, utcnow


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
    # The reviewer's own outcome and topic of the conversation (calibrates the judge); None on
    # scores given before outcomes existed.
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    topic: Mapped[str | None] = mapped_column(String(64), nullable=True)
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


MAINTENANCE_TASKS = ("partitions", "analyze", "vacuum", "retention", "backup", "backup_check")


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
