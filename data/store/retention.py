"""Data retention (RETENTION_DAYS): old raw rows go, the hourly rollups keep the history.

Model calls, agent events and chat messages older than the cutoff are deleted in batches of
RETENTION_BATCH rows, one short transaction per batch, so the app keeps writing meanwhile. The
cutoff is a UTC midnight (N whole days back), so deleted hours and days are whole and their
rollups (rollup_hourly, rollup_session_hourly, rollup_context_bins, rollup_percentiles) stay
exact: the cost, context and latency pages show the same totals for old ranges afterwards.

How the rollups survive: every delete from model_calls marks its hour dirty (the triggers of
migration 0002), and a refresh would recompute that hour from the rows that are left (none).
So the rollups are brought up to date first, and each batch removes the dirty marks below the
cutoff in the same transaction as its delete; no refresh ever sees them. On Postgres, the
monthly partitions of model_calls that end by the cutoff are dropped whole first
(data/store/partitions.py): no trigger fires, so no hour is marked, and no dead row is left to
vacuum.

What goes with the messages: the thumbs on them (a foreign key with ON DELETE CASCADE; LangSmith
keeps its copy). Sessions, review items and scores, tickets and orders are kept, and so is the
LangGraph checkpointer's conversation state. Conversation outcomes are kept too (they are the
outcome history, as the rollups are the cost history), but the quotes of the deleted messages
that a verdict carries are cleared. Memory recall and tool-call latency are read from
agent_events, which have no rollup: their history ends at the cutoff."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, delete, select, update

from data.analytics.rollups import refresh
from data.store import partitions
from data.store.orm import AgentEvent, Message, ModelCall, utcnow
from data.store.orm_outcomes import ConversationOutcome
from data.store.orm_rollups import RollupDirty, RollupDirtySessions


@dataclass(frozen=True, slots=True)
class RetentionResult:
    cutoff: datetime
    model_calls: int
    agent_events: int
    messages: int
    batches: int
    months_dropped: tuple[str, ...] = ()  # Postgres: model_calls partitions dropped whole

    @property
    def rows(self) -> int:
        return self.model_calls + self.agent_events + self.messages


def cutoff_for(days: int, *, now: datetime | None = None) -> datetime:
    """The UTC midnight `days` whole days before `now`: rows before it are deleted."""
    if days < 1:
        raise ValueError("RETENTION_DAYS must be at least 1")
    now = (now or utcnow()).astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)


def _delete_batches(
    engine: Engine, table: Table, time_column: str, cutoff: datetime, batch: int, *, calls: bool
) -> tuple[int, int]:
    """Delete rows of `table` older than `cutoff`, `batch` at a time: (rows, batches)."""
    total = batches = 0
    column = table.c[time_column]
    while True:
        with engine.begin() as connection:
            ids = select(table.c.id).where(column < cutoff).order_by(column).limit(batch)
            result = connection.execute(delete(table).where(table.c.id.in_(ids.scalar_subquery())))
            if calls:
                # The delete trigger marked these hours dirty; their rollups are already exact.
                connection.execute(delete(RollupDirty).where(RollupDirty.hour < cutoff))
                connection.execute(
                    delete(RollupDirtySessions).where(RollupDirtySessions.hour < cutoff)
                )
        deleted = result.rowcount or 0
        total += deleted
        batches += 1 if deleted else 0
        if deleted < batch:
            return total, batches


def apply_retention(
    *, engine: Engine, days: int, batch: int = 5_000, now: datetime | None = None
) -> RetentionResult:
    """Delete model calls, agent events and messages older than `days` whole UTC days."""
    if batch < 1:
        raise ValueError("RETENTION_BATCH must be at least 1")
    cutoff = cutoff_for(days, now=now)
    refresh(engine)  # every hour that is about to lose its rows is exact in the rollups first
    dropped, dropped_calls = partitions.drop_before(engine, cutoff)
    tables: list[tuple[Any, str, bool]] = [
        (ModelCall.__table__, "ts", True),
        (AgentEvent.__table__, "ts", False),
        (Message.__table__, "created_at", False),
    ]
    (calls, b1), (events, b2), (messages, b3) = (
        _delete_batches(engine, t, column, cutoff, batch, calls=is_calls)
        for t, column, is_calls in tables
    )
    with engine.begin() as connection:
        verdicts = ConversationOutcome.__table__.c
        connection.execute(
            update(ConversationOutcome)
            .where(verdicts.ended_at < cutoff, verdicts.quote.is_not(None))
            .values(quote=None)
        )
    return RetentionResult(
        cutoff=cutoff,
        model_calls=dropped_calls + calls,
        agent_events=events,
        messages=messages,
        batches=b1 + b2 + b3,
        months_dropped=tuple(dropped),
    )
