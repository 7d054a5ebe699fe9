"""The definitions every figure shares, on SQLite and Postgres: a call's context percent, the
metrics the percentile rollups keep, the UTC hour or day floor, the context histogram's bins."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    and_,
    cast,
    func,
)
from sqlalchemy.sql.elements import ColumnElement

from data.store.orm import ModelCall

C = ModelCall.__table__.c


PERCENT = 100.0 * cast(C.context_tokens, Float) / func.nullif(C.context_window, 0)


BIN_WIDTH = 5


# metric -> (value, extra condition): the same definitions as the raw-row functions use.
METRICS: dict[str, tuple[ColumnElement[Any], ColumnElement[bool]]] = {
    "latency": (C.latency_ms, and_(C.purpose == "chat", C.status == "ok")),
    "ttft": (C.ttft_ms, and_(C.purpose == "chat", C.status == "ok")),
    "summarize": (C.latency_ms, and_(C.purpose == "summarize", C.status == "ok")),
    "context": (
        PERCENT,
        and_(C.purpose == "chat", C.status == "ok", C.context_window.is_not(None)),
    ),
}


def floor(column: Any, dialect: str, unit: str) -> ColumnElement[Any]:
    """The UTC hour or day of a timestamp, in the form the rollup tables store."""
    if dialect == "sqlite":
        pattern = "%Y-%m-%d %H:00:00.000000" if unit == "hour" else "%Y-%m-%d 00:00:00.000000"
        return func.strftime(pattern, column)
    return func.timezone("UTC", func.date_trunc(unit, func.timezone("UTC", column)))


def bin_of(dialect: str) -> ColumnElement[int]:
    least = func.min if dialect == "sqlite" else func.least
    return cast(func.floor(least(PERCENT, 100.0) / BIN_WIDTH), Integer) * BIN_WIDTH
