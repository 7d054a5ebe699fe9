"""Writes model calls to the database and the Prometheus metrics."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from data.metrics import observe_call
from data.models import ModelCall
from data.records import CallRecord


def record_call(*, session: Session, call: CallRecord) -> None:
    """Add one call to `session` (the caller commits)."""
    session.execute(insert(ModelCall), [call.as_row()])


def record_calls(*, engine: Engine, calls: Sequence[CallRecord]) -> int:
    """Insert many calls in one transaction (executemany); returns how many were written."""
    if not calls:
        return 0
    with engine.begin() as connection:
        connection.execute(insert(ModelCall), [c.as_row() for c in calls])
    return len(calls)


class Recorder:
    """The agent's sink for measured calls: one committed row, then the metrics."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, call: CallRecord) -> None:
        with self.engine.begin() as connection:
            connection.execute(insert(ModelCall), [call.as_row()])
        observe_call(call)
