"""The rollup tables: the dirty hours and days a refresh must recompute, and the exact hourly,
per-session, per-user, context-bin and percentile rollups the analyst pages read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from data.store.orm import Base, UTCDateTime


class RollupDirty(Base):
    """UTC hours whose rollups must be recomputed (filled by triggers on model_calls)."""

    __tablename__ = "rollup_dirty"
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)


class RollupDirtySessions(Base):
    """The sessions a write touched in a dirty hour (filled by the same triggers): a refresh
    recomputes only these in that hour. A dirty hour with none listed is recomputed whole."""

    __tablename__ = "rollup_dirty_sessions"
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)


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


class RollupDirtyPercentileHours(Base):
    """UTC hours whose hour percentiles wait to be recomputed (a refresh after a chat turn
    queues its hour; the background settle recomputes it); until then a read computes them
    from the raw rows, so a view is exact either way."""

    __tablename__ = "rollup_dirty_percentile_hours"
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)


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
