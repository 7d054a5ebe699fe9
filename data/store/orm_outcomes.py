"""Conversation outcomes: the ended conversations waiting to be judged (a leased work list) and
every verdict ever given, the newest of each conversation marked current."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from data.store.orm import Base, BigId, UTCDateTime, utcnow

OUTCOMES = ("resolved", "escalated", "abandoned", "unresolved")
OUTCOME_LABELS = {
    "resolved": "Resolved",
    "escalated": "Escalated",
    "abandoned": "Abandoned",
    "unresolved": "Unresolved",
    "unjudged": "Unjudged",
}
# What a stored verdict can say: one of OUTCOMES, or "unjudged" (the judge failed twice; the
# reason is kept, the outcome is never guessed).
VERDICTS = (*OUTCOMES, "unjudged")
DECIDERS = ("rules", "judge", "none")
END_REASONS = ("idle", "closed")
RULES_VERSION = "rules-v1"  # the rubric_version of verdicts the rules decided
JOB_STATES = ("pending", "done", "skipped")


class OutcomeJob(Base):
    """One end of one conversation: found by the end detector (idle or closed), then leased by
    one judge worker at a time. A conversation that resumes and ends again gets a new job (its
    last message differs), so every end is judged once."""

    __tablename__ = "outcome_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128))
    last_message_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_reason: Mapped[str] = mapped_column(String(8))  # one of END_REASONS
    state: Mapped[str] = mapped_column(String(8), default="pending")  # one of JOB_STATES
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)  # why skipped

    __table_args__ = (
        UniqueConstraint("session_id", "last_message_at", name="uq_outcome_jobs_session_end"),
        Index(
            "ix_outcome_jobs_pending",
            "created_at",
            sqlite_where=text("state = 'pending'"),
            postgresql_where=text("state = 'pending'"),
        ),
    )


class ConversationOutcome(Base):
    """One verdict on one ended conversation. Kept for ever; `current` marks the newest of its
    conversation (the one that counts). The conversation's figures at the time of the verdict
    (chat model, cost, peak context, summarizations, turns) are kept with it, so the Outcomes
    page reads one table."""

    __tablename__ = "conversation_outcomes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128))
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime())  # its last message
    end_reason: Mapped[str] = mapped_column(String(8))  # one of END_REASONS
    judged_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    outcome: Mapped[str] = mapped_column(String(16))  # one of VERDICTS
    topic: Mapped[str | None] = mapped_column(String(64), nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    quote: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The quote was found, word for word, in the transcript the judge was given.
    quote_found: Mapped[bool] = mapped_column(Boolean, default=False)
    decided_by: Mapped[str] = mapped_column(String(8))  # one of DECIDERS
    judge_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    rubric_version: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why unjudged
    reopened: Mapped[bool] = mapped_column(Boolean, default=False)
    current: Mapped[bool] = mapped_column(Boolean, default=True)
    chat_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    peak_context_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    summarizations: Mapped[int] = mapped_column(Integer, default=0)
    turns: Mapped[int] = mapped_column(Integer, default=0)
    demo: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_conversation_outcomes_session", "session_id", "id"),
        Index("ix_conversation_outcomes_current_ended", "current", "ended_at"),
        Index("ix_conversation_outcomes_ended", "ended_at"),
        Index("ix_conversation_outcomes_user_ended", "user_id", "ended_at"),
    )


class RollupOutcome(Base):
    """The Outcomes page's figures per UTC day (data/analytics/outcomes.py): verdict counts and
    cost by chat model and outcome, for each `kind` of breakdown. Kind `all` holds every verdict
    (current or not, with `reopened`), the others the current verdicts by `key`: `topic`,
    `rubric_version`, `judge_model`, `band` (peak context) or `folds` (summarizations).
    Recomputed a day at a time from conversation_outcomes, whose triggers queue the days."""

    __tablename__ = "rollup_outcomes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD (UTC)
    chat_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    current: Mapped[bool] = mapped_column(Boolean)
    reopened: Mapped[bool] = mapped_column(Boolean)
    n: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_rollup_outcomes_kind_day", "kind", "day"),)


class RollupOutcomeDirty(Base):
    """Days whose verdicts changed since their rollup rows were computed (filled by triggers on
    conversation_outcomes, so no writer can forget it; emptied by the page's refresh)."""

    __tablename__ = "rollup_outcome_dirty"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    day: Mapped[str] = mapped_column(String(10))
