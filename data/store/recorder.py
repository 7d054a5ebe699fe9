"""Writes model calls to the database and the Prometheus metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Engine, Table, insert

from data.integrations.metrics import MEMORY_RETRIEVAL_LATENCY, observe_call
from data.store.orm import EVENT_KINDS, AgentEvent, ModelCall
from data.store.records import CallRecord, EventRecord


def record_calls(*, engine: Engine, calls: Sequence[CallRecord]) -> int:
    """Insert many calls in one transaction (executemany); returns how many were written."""
    if not calls:
        return 0
    with engine.begin() as connection:
        connection.execute(insert(ModelCall), [c.as_row() for c in calls])
    return len(calls)


# Built once (see data/store/conversations.py): a turn records a few of these rows.
_INSERT_CALL = insert(cast(Table, ModelCall.__table__))
_INSERT_EVENT = insert(cast(Table, AgentEvent.__table__))


def check_event(event: EventRecord) -> None:
    """An event of a kind the table does not know is refused before it is written or held."""
    if event.kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {event.kind!r}")


def _observe_event(event: EventRecord) -> None:
    if event.kind == "memory_recall":
        MEMORY_RETRIEVAL_LATENCY.observe(event.latency_ms / 1000)


class Recorder:
    """The agent's sink for measured calls: one committed row, then the metrics."""

    def __init__(self, engine: Engine) -> None:
        # One row is one statement: in autocommit it is atomic and needs one round trip
        # instead of three (BEGIN, INSERT, COMMIT), which keeps recording under 1 ms a call.
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    def __call__(self, call: CallRecord) -> None:
        with self.engine.connect() as connection:
            connection.execute(_INSERT_CALL, call.as_row())
        observe_call(call)


class EventRecorder:
    """The agent's sink for its events (memory recalls, tool calls, folds): one committed row
    each, like `Recorder`; a recall also feeds memory_retrieval_latency_seconds. The
    autocommit engine is made once: `Engine.execution_options` builds a new engine, with its
    event listeners, at every call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    def __call__(self, event: EventRecord) -> None:
        check_event(event)
        with self.engine.connect() as connection:
            connection.execute(_INSERT_EVENT, event.as_row())
        _observe_event(event)


class TurnRecorder:
    """Writes one turn's model calls and events in one transaction (an executemany each), then
    the metrics, as `Recorder` and `EventRecorder` do for one row (agent/ledger.py)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, calls: Sequence[CallRecord], events: Sequence[EventRecord]) -> None:
        for event in events:
            check_event(event)
        with self.engine.begin() as connection:
            if calls:
                connection.execute(_INSERT_CALL, [call.as_row() for call in calls])
            if events:
                connection.execute(_INSERT_EVENT, [event.as_row() for event in events])
        for call in calls:
            observe_call(call)
        for event in events:
            _observe_event(event)


def record_event(*, engine: Engine, event: EventRecord) -> None:
    """Store one event outside the agent (a refused message, scripts, tests)."""
    EventRecorder(engine)(event)
