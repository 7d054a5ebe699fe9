"""Time buckets computed inside the database, the same on SQLite and Postgres (UTC)."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import func
from sqlalchemy.sql.elements import ColumnElement

Unit = Literal["day", "hour"]

_SQLITE = {"day": "%Y-%m-%d", "hour": "%Y-%m-%d %H:00"}
_POSTGRES = {"day": "YYYY-MM-DD", "hour": "YYYY-MM-DD HH24:00"}


def bucket(column: Any, *, dialect: str, unit: Unit = "day") -> ColumnElement[str]:
    """The UTC day ('2026-11-25') or hour ('2026-11-25 14:00') of a timestamp column."""
    if dialect == "sqlite":
        return func.strftime(_SQLITE[unit], column)
    return func.to_char(func.timezone("UTC", column), _POSTGRES[unit])
