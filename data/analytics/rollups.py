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

The same triggers list the sessions a write touched in each dirty hour
(`rollup_dirty_sessions`). An hour with a few listed (a chat turn, a late call, a correction) is
recomputed narrowly: those sessions' `rollup_session_hourly` rows, then the hourly sums and
context bins of every model those sessions had or have in the hour; its percentiles are
queued (`rollup_dirty_percentile_hours`) for the background settle, and read from the raw rows
until then. Other sessions' and models' rows of that hour cannot have changed. An hour with
none listed or with more than NARROW_SESSIONS (a bulk load, a backfill) is recomputed whole.

Sums, counts, maxima and minima of whole hours add up exactly, so every figure that the pages
build from them equals the raw-row computation for any range of whole hours. The data
functions call `ensure_fresh()` first, so a read never sees a stale hour."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import array as pg_array
from sqlalchemy.sql.elements import ColumnElement

from data.analytics.measures import METRICS, C, bin_of, floor
from data.analytics.percentiles import percentiles
from data.analytics.session_rollups import (
    BULK_SESSIONS,
    SESSION_COLUMNS,
    H,
    _rebuild_sessions,
    _rebuild_users,
    session_aggregate,
)
from data.store.orm_rollups import (
    RollupContextBins,
    RollupDirty,
    RollupDirtyDays,
    RollupDirtyPercentileHours,
    RollupDirtySessions,
    RollupHourly,
    RollupPercentiles,
    RollupSessionHourly,
)

log = logging.getLogger(__name__)


def _ranges(starts: Iterable[datetime], step: timedelta) -> list[tuple[datetime, datetime]]:
    """Contiguous [start, end) ranges covering the given bucket starts."""
    out: list[tuple[datetime, datetime]] = []
    for start in sorted(set(starts)):
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], start + step)
        else:
            out.append((start, start + step))
    return out


def _sums(connection: Connection, start: datetime, end: datetime) -> None:
    """Every hourly rollup row of [start, end), recomputed from the raw rows."""
    where = and_(C.ts >= start, C.ts < end)
    _model_sums(connection, where)
    _session_hours(connection, where)


def _model_sums(connection: Connection, where: ColumnElement[bool]) -> None:
    """rollup_hourly and rollup_context_bins rows of the raw rows matching `where`."""
    dialect = connection.dialect.name
    hour = floor(C.ts, dialect, "hour")
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


def _session_hours(connection: Connection, where: ColumnElement[bool]) -> None:
    """rollup_session_hourly rows of the raw rows matching `where`."""
    hour = floor(C.ts, connection.dialect.name, "hour")
    connection.execute(
        insert(RollupSessionHourly).from_select(
            ["hour", *SESSION_COLUMNS], session_aggregate(where, hour)
        )
    )


def _within(ranges: list[tuple[datetime, datetime]]) -> ColumnElement[bool]:
    return or_(*[and_(C.ts >= start, C.ts < end) for start, end in ranges])


def _percentiles(
    connection: Connection, unit: str, ranges: list[tuple[datetime, datetime]]
) -> None:
    """Percentile rows of every bucket in `ranges` (whole buckets), 50 ranges per query."""
    for i in range(0, len(ranges), 50):
        if connection.dialect.name == "postgresql":
            _percentiles_pg(connection, unit, _within(ranges[i : i + 50]))
        else:
            _percentiles_sqlite(connection, unit, _within(ranges[i : i + 50]))


def _replace_percentiles(
    connection: Connection, unit: str, ranges: list[tuple[datetime, datetime]]
) -> None:
    """Delete the stored `unit` percentiles of `ranges` and compute them again."""
    for start, end in ranges:
        connection.execute(
            delete(RollupPercentiles).where(
                RollupPercentiles.unit == unit,
                RollupPercentiles.bucket >= start,
                RollupPercentiles.bucket < end,
            )
        )
    _percentiles(connection, unit, ranges)


def _percentiles_sqlite(connection: Connection, unit: str, in_range: ColumnElement[bool]) -> None:
    engine = connection.engine
    bucket = floor(C.ts, connection.dialect.name, unit).label("bucket")
    rows: list[dict[str, Any]] = []
    for metric, (value, condition) in METRICS.items():
        where = and_(in_range, condition)
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


def _percentiles_pg(connection: Connection, unit: str, in_range: ColumnElement[bool]) -> None:
    """The same rows in one pass over the range: every metric's percentile_cont (one sort per
    metric and group, FILTERed to its calls) for each model and for all models together,
    through GROUPING SETS. A new call's hour then costs one scan of that hour instead of
    eight."""
    bucket = floor(C.ts, "postgresql", unit).label("bucket")
    columns: list[Any] = []
    for value, condition in METRICS.values():
        columns += [
            func.count(value).filter(condition),
            func.percentile_cont(pg_array([0.5, 0.95, 0.99])).within_group(value).filter(condition),
        ]
    query = (
        select(bucket, func.coalesce(C.model, "*"), *columns)
        .where(in_range)
        .group_by(func.grouping_sets(tuple_(bucket, C.model), tuple_(bucket)))
    )
    rows: list[dict[str, Any]] = []
    for record in connection.execute(query):
        for i, metric in enumerate(METRICS):
            n, values = record[2 + 2 * i], record[3 + 2 * i]
            if not n:
                continue
            rows.append(
                {
                    "unit": unit,
                    "metric": metric,
                    "model": record[1],
                    "bucket": record[0],
                    "n": int(n),
                    "p50": values[0],
                    "p95": values[1],
                    "p99": values[2],
                }
            )
    if rows:
        connection.execute(insert(RollupPercentiles), rows)


# Per-session and per-user rollups -----------------------------------------------------------


def _hourly_snapshot(
    connection: Connection,
    ranges: list[tuple[datetime, datetime]],
    sessions: list[str] | None = None,
) -> set[tuple[Any, ...]]:
    """The rollup_session_hourly rows of the given ranges (of `sessions` only, if given), to
    tell which sessions, users and models changed."""
    out: set[tuple[Any, ...]] = set()
    for start, end in ranges:
        query = select(H.session_id, H.user_id, *[H[c] for c in SESSION_COLUMNS[1:]]).where(
            H.hour >= start, H.hour < end
        )
        if sessions is not None:
            query = query.where(H.session_id.in_(sessions))
        out.update(tuple(row) for row in connection.execute(query))
    return out


# Refresh ------------------------------------------------------------------------------------

# An hour with more dirty sessions than this is recomputed whole (a bulk load, a backfill).
NARROW_SESSIONS = 200
BULK_HOURS = 48  # more dirty hours than this: recompute the whole span at once


def refresh_hours(engine: Engine) -> int:
    """Recompute every dirty hour, the sessions and users whose figures changed with them, and
    queue the days that hold a dirty hour for settle_days(). Returns how many hours."""
    with engine.begin() as connection:
        # Taken inside this transaction: a write that lands meanwhile marks its hour again.
        hours = list(connection.execute(delete(RollupDirty).returning(RollupDirty.hour)).scalars())
        if not hours:
            return 0
        bulk = _recompute(connection, hours, _take_sessions(connection, hours))
    if connection.dialect.name == "postgresql" and bulk:
        # A bulk load leaves the new rows' pages not all-visible, so the counts' index-only
        # scans would visit the heap until autovacuum came by: set the visibility map now.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as autocommit:
            for name in ("rollup_sessions", "rollup_users", "rollup_session_hourly"):
                autocommit.exec_driver_sql(f"VACUUM {name}")
    return len(hours)


def _take_sessions(connection: Connection, hours: list[datetime]) -> dict[datetime, list[str]]:
    """Take the dirty sessions of `hours` off their queue: the hours that can be recomputed
    narrowly (at most NARROW_SESSIONS sessions listed), each with its sessions. An hour left
    out is recomputed whole; its queued sessions are dropped with it."""
    D = RollupDirtySessions
    if len(hours) > BULK_HOURS:
        connection.execute(delete(D))
        return {}
    crowded = set(
        connection.execute(
            select(D.hour)
            .where(D.hour.in_(hours))
            .group_by(D.hour)
            .having(func.count() > NARROW_SESSIONS)
        ).scalars()
    )
    if crowded:
        connection.execute(delete(D).where(D.hour.in_(crowded)))
    out: dict[datetime, list[str]] = {}
    narrow = [h for h in hours if h not in crowded]
    if narrow:
        taken = connection.execute(
            delete(D).where(D.hour.in_(narrow)).returning(D.hour, D.session_id)
        )
        for hour, session in taken:
            out.setdefault(hour, []).append(session)
    return out


# Every rollup table (rollup_dirty and the other rollup_dirty_* tables are queues, not rollups).
TABLES = (
    "rollup_hourly",
    "rollup_session_hourly",
    "rollup_context_bins",
    "rollup_percentiles",
    "rollup_sessions",
    "rollup_users",
)
WARM_HOUR = datetime(2000, 1, 1, tzinfo=UTC)  # long before any call the app records


def warm(engine: Engine) -> None:
    """Recompute one empty hour (WARM_HOUR), whole and for one session, in a transaction that
    is rolled back, so that this engine has compiled and cached the refresh's statements
    before the first refresh after a call: at 10M calls on Postgres that first refresh took
    53-63 ms against 32 for the next ones. The app calls it when it opens its database."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            _take_sessions(connection, [WARM_HOUR])
            _recompute(connection, [WARM_HOUR], {})
            _recompute(connection, [WARM_HOUR], {WARM_HOUR: [""]})
            _models_of_hour(connection, WARM_HOUR, [""])
            # An empty hour changes no session: rebuild one that does not exist.
            _rebuild_sessions(connection, [""])
            _rebuild_users(connection, [""])
        finally:
            transaction.rollback()


def _recompute(
    connection: Connection, hours: list[datetime], sessions: dict[datetime, list[str]]
) -> bool:
    """refresh_hours' work for `hours`, inside the caller's transaction; an hour in `sessions`
    is recomputed for those sessions only (the narrow path), the others whole. Returns
    whether it was a bulk refresh."""
    bulk = len(hours) > BULK_HOURS
    # A bulk refresh recomputes the whole span at once (hours in it that were not dirty
    # come out the same): one pass instead of one per gap in the data.
    whole = [h for h in hours if bulk or h not in sessions]
    ranges = (
        [(min(hours), max(hours) + timedelta(hours=1))]
        if bulk
        else _ranges(whole, timedelta(hours=1))
    )
    before = set() if bulk else _hourly_snapshot(connection, ranges)
    for start, end in ranges:
        for table in (RollupHourly, RollupSessionHourly, RollupContextBins):
            connection.execute(delete(table).where(table.hour >= start, table.hour < end))
        _sums(connection, start, end)
    after = set() if bulk else _hourly_snapshot(connection, ranges)
    if not bulk:
        for hour, listed in sorted(sessions.items()):
            was, now = _narrow(connection, hour, listed)
            before |= was
            after |= now
    # The whole hours' percentiles now; a narrowly recomputed hour's wait for settle_days()
    # (sorting every call of a busy hour is most of a refresh), read from the raw rows meanwhile.
    _replace_percentiles(connection, "hour", ranges)
    module = postgresql if connection.dialect.name == "postgresql" else sqlite
    if sessions and not bulk:
        connection.execute(
            module.insert(RollupDirtyPercentileHours).on_conflict_do_nothing(),
            [{"hour": h} for h in sorted(sessions)],
        )
    changed: list[str] | None = None
    if not bulk:
        changed = sorted({row[0] for row in before ^ after})
        if len(changed) > BULK_SESSIONS:
            changed = None
    if changed is None:
        _rebuild_sessions(connection, None)
        _rebuild_users(connection, None)
    elif changed:
        users = {row[1] for row in before ^ after}
        _rebuild_sessions(connection, changed)
        _rebuild_users(connection, sorted(users))
    days = sorted({h.replace(hour=0) for h in hours})
    connection.execute(
        module.insert(RollupDirtyDays).on_conflict_do_nothing(),
        [{"day": d} for d in days],
    )
    if connection.dialect.name == "postgresql" and bulk:
        # After a bulk load the planner's row estimates for the rollups are far off.
        for name in TABLES:
            connection.exec_driver_sql(f"ANALYZE {name}")
    return bulk


def _narrow(
    connection: Connection, hour: datetime, sessions: list[str]
) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """Recompute one hour for the sessions a write touched: their rollup_session_hourly rows,
    then the rollup_hourly and rollup_context_bins rows of every model those sessions had or
    have in the hour (a call's old and new model both show in one of the two snapshots).
    Every other session's and model's rows of the hour are unchanged by that write. Returns
    the sessions' rows before and after."""
    end = hour + timedelta(hours=1)
    in_hour = and_(C.ts >= hour, C.ts < end)
    span = [(hour, end)]
    before = _hourly_snapshot(connection, span, sessions)
    connection.execute(
        delete(RollupSessionHourly).where(
            RollupSessionHourly.hour == hour, RollupSessionHourly.session_id.in_(sessions)
        )
    )
    _session_hours(connection, and_(in_hour, C.session_id.in_(sessions)))
    after = _hourly_snapshot(connection, span, sessions)
    models = sorted({row[2] for row in before | after})
    if models:
        _models_of_hour(connection, hour, models)
    return before, after


def _models_of_hour(connection: Connection, hour: datetime, models: list[str]) -> None:
    """Recompute the rollup_hourly and rollup_context_bins rows of `models` in one hour."""
    for table in (RollupHourly, RollupContextBins):
        connection.execute(delete(table).where(table.hour == hour, table.model.in_(models)))
    in_hour = and_(C.ts >= hour, C.ts < hour + timedelta(hours=1), C.model.in_(models))
    _model_sums(connection, in_hour)


def settle_days(engine: Engine) -> int:
    """Recompute the day percentiles of every queued day, and the hour percentiles of every
    queued hour. Returns how many days."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # One settler at a time across processes; the others leave the days to it.
            got = connection.execute(select(func.pg_try_advisory_xact_lock(SETTLE_LOCK))).scalar()
            if not got:
                return 0
        _settle_hours(connection)
        days = list(connection.execute(select(RollupDirtyDays.day)).scalars())
        if not days:
            return 0
        connection.execute(delete(RollupDirtyDays).where(RollupDirtyDays.day.in_(days)))
        day_ranges = _ranges(days, timedelta(days=1))
        _replace_percentiles(connection, "day", day_ranges)
        if connection.dialect.name == "postgresql" and len(days) > 2:
            connection.exec_driver_sql("ANALYZE rollup_percentiles")
    return len(days)


def _settle_hours(connection: Connection) -> None:
    """Recompute the hour percentiles of every queued hour, in the caller's transaction."""
    P = RollupDirtyPercentileHours
    hours = list(connection.execute(delete(P).returning(P.hour)).scalars())
    if not hours:
        return
    ranges = _ranges(hours, timedelta(hours=1))
    _replace_percentiles(connection, "hour", ranges)


SETTLE_LOCK = 0x61636264  # "acbd": the advisory lock key of settle_days


def refresh(engine: Engine) -> int:
    """Recompute every dirty hour and every queued day, now. Returns how many hours."""
    hours = refresh_hours(engine)
    settle_days(engine)
    return hours


def dirty_days(engine: Engine, start: datetime, end: datetime) -> list[datetime]:
    """The queued days in [start, end): their stored day percentiles may be stale."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(RollupDirtyDays.day).where(
                    RollupDirtyDays.day >= start, RollupDirtyDays.day < end
                )
            ).scalars()
        )


def dirty_percentile_hours(engine: Engine, start: datetime, end: datetime) -> list[datetime]:
    """The queued hours in [start, end): their stored hour percentiles may be stale."""
    P = RollupDirtyPercentileHours
    with engine.connect() as connection:
        return list(
            connection.execute(select(P.hour).where(P.hour >= start, P.hour < end)).scalars()
        )
