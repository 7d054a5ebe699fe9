"""Exact rollups of model_calls for the analyst pages, and how they stay exact.

Triggers on model_calls put the UTC hour of every inserted, updated or deleted row into
`rollup_dirty` (a call that arrives late, a corrected cost, a deleted row: all the same).
`refresh()` takes the dirty hours and recomputes, from the raw rows of exactly those hours:

- `rollup_hourly`: sums per hour, model, provider, purpose, status and cost status,
- `rollup_session_hourly`: per session, hour and model (sums, maxima, first and last call),
- `rollup_context_bins`: successful chat calls per 5-point context % bin,
- `rollup_percentiles`: p50/p95/p99 per hour and per UTC day that contains a dirty hour, per
  model and for all models ('*'). Percentiles do not add up, so they are only ever read for
  whole buckets; a view that needs any other grouping reads the raw rows.

Sums, counts, maxima and minima of whole hours add up exactly, so every figure that the pages
build from them equals the raw-row computation for any range of whole hours. The data
functions call `ensure_fresh()` first, so a read never sees a stale hour."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

from data.models import (
    ModelCall,
    RollupContextBins,
    RollupDirty,
    RollupHourly,
    RollupPercentiles,
    RollupSessionHourly,
)
from data.percentiles import percentiles

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


def _ranges(starts: Iterable[datetime], step: timedelta) -> list[tuple[datetime, datetime]]:
    """Contiguous [start, end) ranges covering the given bucket starts."""
    out: list[tuple[datetime, datetime]] = []
    for start in sorted(set(starts)):
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], start + step)
        else:
            out.append((start, start + step))
    return out


SESSION_COLUMNS = (
    "session_id",
    "model",
    "user_id",
    "calls",
    "tokens",
    "cost_usd",
    "unpriced_calls",
    "summarizations",
    "max_turn",
    "first_call",
    "last_call",
    "peak_context_percent",
)


def session_aggregate(where: ColumnElement[bool], *extra_groups: Any) -> Any:
    """Per-session figures of the raw rows matching `where`, grouped by session, model and any
    `extra_groups` (which come first): the one definition behind rollup_session_hourly and the
    raw-row path of the per-session tables."""
    chat_ok = and_(C.purpose == "chat", C.status == "ok")
    return (
        select(
            *extra_groups,
            C.session_id,
            C.model,
            func.min(C.user_id).label("user_id"),
            func.count().label("calls"),
            func.sum(C.input_tokens + C.output_tokens).label("tokens"),
            func.coalesce(func.sum(C.cost_usd), 0.0).label("cost_usd"),
            func.sum(case((C.cost_status == "unknown", 1), else_=0)).label("unpriced_calls"),
            func.sum(case((C.purpose == "summarize", 1), else_=0)).label("summarizations"),
            func.max(C.turn).label("max_turn"),
            func.min(C.ts).label("first_call"),
            func.max(C.ts).label("last_call"),
            func.max(case((chat_ok, PERCENT))).label("peak_context_percent"),
        )
        .where(where)
        .group_by(*extra_groups, C.session_id, C.model)
    )


def _sums(connection: Connection, start: datetime, end: datetime) -> None:
    dialect = connection.dialect.name
    hour = floor(C.ts, dialect, "hour")
    where = and_(C.ts >= start, C.ts < end)
    keys = [C.model, C.provider, C.purpose, C.status, C.cost_status]
    connection.execute(
        insert(RollupHourly).from_select(
            [
                "hour",
                "model",
                "provider",
                "purpose",
                "status",
                "cost_status",
                "calls",
                "input_tokens",
                "cached_input_tokens",
                "output_tokens",
                "cost_usd",
            ],
            select(
                hour,
                *keys,
                func.count(),
                func.sum(C.input_tokens),
                func.sum(C.cached_input_tokens),
                func.sum(C.output_tokens),
                func.coalesce(func.sum(C.cost_usd), 0.0),
            )
            .where(where)
            .group_by(hour, *keys),
        )
    )
    connection.execute(
        insert(RollupSessionHourly).from_select(
            ["hour", *SESSION_COLUMNS], session_aggregate(where, hour)
        )
    )
    _, condition = METRICS["context"]
    bins = bin_of(dialect)
    connection.execute(
        insert(RollupContextBins).from_select(
            ["hour", "model", "bin", "calls"],
            select(hour, C.model, bins, func.count())
            .where(where, condition)
            .group_by(hour, C.model, bins),
        )
    )


def _percentiles(connection: Connection, unit: str, start: datetime, end: datetime) -> None:
    engine = connection.engine
    bucket = floor(C.ts, connection.dialect.name, unit).label("bucket")
    rows: list[dict[str, Any]] = []
    for metric, (value, condition) in METRICS.items():
        where = and_(C.ts >= start, C.ts < end, condition)
        per_model = percentiles(
            engine=engine, value=value, groups=[bucket, C.model], where=where, connection=connection
        )
        overall = percentiles(
            engine=engine, value=value, groups=[bucket], where=where, connection=connection
        )
        overall["model"] = "*"
        for frame in (per_model, overall):
            for record in frame.to_dict("records"):
                rows.append(
                    {
                        "unit": unit,
                        "metric": metric,
                        "model": record["model"],
                        "bucket": pd.Timestamp(record["bucket"])
                        .tz_localize(None)
                        .replace(tzinfo=UTC)
                        if isinstance(record["bucket"], str)
                        else pd.Timestamp(record["bucket"]).to_pydatetime(),
                        "n": int(record["n"]),
                        **{
                            p: None if pd.isna(record[p]) else float(record[p])
                            for p in ("p50", "p95", "p99")
                        },
                    }
                )
    if rows:
        connection.execute(insert(RollupPercentiles), rows)


def refresh(engine: Engine) -> int:
    """Recompute every dirty hour (and the days that hold one). Returns how many hours."""
    with engine.begin() as connection:
        hours = list(connection.execute(select(RollupDirty.hour)).scalars())
        if not hours:
            return 0
        # Taken inside this transaction: a write that lands meanwhile marks its hour again.
        for i in range(0, len(hours), 500):
            connection.execute(delete(RollupDirty).where(RollupDirty.hour.in_(hours[i : i + 500])))
        for start, end in _ranges(hours, timedelta(hours=1)):
            for table in (RollupHourly, RollupSessionHourly, RollupContextBins):
                connection.execute(delete(table).where(table.hour >= start, table.hour < end))
            connection.execute(
                delete(RollupPercentiles).where(
                    RollupPercentiles.unit == "hour",
                    RollupPercentiles.bucket >= start,
                    RollupPercentiles.bucket < end,
                )
            )
            _sums(connection, start, end)
            _percentiles(connection, "hour", start, end)
        days = {h.replace(hour=0) for h in hours}
        for start, end in _ranges(days, timedelta(days=1)):
            connection.execute(
                delete(RollupPercentiles).where(
                    RollupPercentiles.unit == "day",
                    RollupPercentiles.bucket >= start,
                    RollupPercentiles.bucket < end,
                )
            )
            _percentiles(connection, "day", start, end)
        if connection.dialect.name == "postgresql" and len(hours) > 24:
            # After a bulk load the planner's row estimates for the rollups are far off.
            for name in (
                "rollup_hourly",
                "rollup_session_hourly",
                "rollup_context_bins",
                "rollup_percentiles",
            ):
                connection.exec_driver_sql(f"ANALYZE {name}")
    return len(hours)


def ensure_fresh(engine: Engine) -> None:
    """Refresh if any hour is dirty (one indexed lookup when nothing is)."""
    with engine.connect() as connection:
        dirty = connection.execute(select(literal(1)).select_from(RollupDirty).limit(1)).first()
    if dirty is not None:
        refresh(engine)
