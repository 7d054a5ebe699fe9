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

import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import array as pg_array
from sqlalchemy.sql.elements import ColumnElement

from data.analytics.parallel_reads import is_fresh
from data.analytics.percentiles import percentiles
from data.store.orm import (
    ModelCall,
    RollupContextBins,
    RollupDirty,
    RollupDirtyDays,
    RollupHourly,
    RollupPercentiles,
    RollupSessionHourly,
    RollupSessions,
    RollupUsers,
)

log = logging.getLogger(__name__)
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
    "chat_calls",
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
            func.sum(case((C.purpose == "chat", 1), else_=0)).label("chat_calls"),
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

H = RollupSessionHourly.__table__.c
RS: Table = RollupSessions.__table__  # type: ignore[assignment]
RU: Table = RollupUsers.__table__  # type: ignore[assignment]
# Above this many changed sessions, rebuilding both tables whole is faster than row by row.
BULK_SESSIONS = 5000
CHUNK = 500


def _session_sums(where: ColumnElement[bool], *, all_models: bool) -> Any:
    """rollup_sessions rows (without chat_model and latency_p95_ms) from the hourly rows."""
    model = literal("*").label("model") if all_models else H.model
    groups = [H.session_id] if all_models else [H.session_id, H.model]
    return (
        select(
            H.session_id.label("session_id"),
            model,
            func.min(H.user_id).label("user_id"),
            func.sum(H.calls).label("calls"),
            func.sum(H.chat_calls).label("chat_calls"),
            func.sum(H.tokens).label("tokens"),
            func.sum(H.cost_usd).label("cost_usd"),
            func.sum(H.unpriced_calls).label("unpriced_calls"),
            func.sum(H.summarizations).label("summarizations"),
            func.max(H.max_turn).label("max_turn"),
            func.min(H.first_call).label("first_call"),
            func.max(H.last_call).label("last_call"),
            func.max(H.peak_context_percent).label("peak_context_percent"),
        )
        .where(where)
        .group_by(*groups)
    )


SESSION_SUM_COLUMNS = [
    "session_id",
    "model",
    "user_id",
    "calls",
    "chat_calls",
    "tokens",
    "cost_usd",
    "unpriced_calls",
    "summarizations",
    "max_turn",
    "first_call",
    "last_call",
    "peak_context_percent",
]


def _rebuild_sessions(connection: Connection, sessions: list[str] | None) -> None:
    """Recompute the rollup_sessions rows of `sessions` (None: every session). Each row is
    written once, complete (an UPDATE afterwards would touch every index of every row)."""
    parts = [None] if sessions is None else list(_chunked(sessions))
    postgres = connection.dialect.name == "postgresql"
    value, condition = METRICS["latency"]
    for part in parts:
        hourly = H.session_id.in_(part) if part is not None else literal(True)
        raw = and_(condition, C.session_id.in_(part) if part is not None else literal(True))
        connection.execute(
            delete(RS).where(RS.c.session_id.in_(part) if part is not None else literal(True))
        )
        per_model = _session_sums(hourly, all_models=False).subquery("per_model")
        # The session's chat model: most chat calls, then the name (review's definition).
        ranked = select(
            per_model.c.session_id,
            per_model.c.model,
            func.row_number()
            .over(
                partition_by=per_model.c.session_id,
                order_by=(per_model.c.chat_calls.desc(), per_model.c.model),
            )
            .label("rn"),
        ).subquery("ranked")
        chat = select(ranked.c.session_id, ranked.c.model).where(ranked.c.rn == 1).subquery("chat")
        for all_models in (False, True):
            sums = (
                per_model
                if not all_models
                else _session_sums(hourly, all_models=True).subquery("sums")
            )
            columns: list[Any] = [sums.c[name] for name in SESSION_SUM_COLUMNS]
            source = sums
            if all_models:
                source = source.outerjoin(chat, chat.c.session_id == sums.c.session_id)
                columns.append(chat.c.model.label("chat_model"))
            else:
                columns.append(literal(None, String).label("chat_model"))
            if postgres:
                groups = [C.session_id] if all_models else [C.session_id, C.model]
                p95 = (
                    select(
                        *groups,
                        func.percentile_cont(0.95).within_group(value).label("p95"),
                    )
                    .where(raw)
                    .group_by(*groups)
                    .subquery("p95")
                )
                on = p95.c.session_id == sums.c.session_id
                if not all_models:
                    on = and_(on, p95.c.model == sums.c.model)
                source = source.outerjoin(p95, on)
                columns.append(p95.c.p95)
            else:
                columns.append(literal(None, Float))
            connection.execute(
                insert(RS).from_select(
                    [*SESSION_SUM_COLUMNS, "chat_model", "latency_p95_ms"],
                    select(*columns).select_from(source),
                )
            )
        if not postgres:
            _session_latency(connection, part)


def _session_latency(connection: Connection, part: list[str] | None) -> None:
    """SQLite: each session's p95 chat latency (ok calls), per model and for '*', from its raw
    rows (SQLite has no percentile_cont; data.analytics.percentiles interpolates the same way)."""
    value, condition = METRICS["latency"]
    where = and_(condition, C.session_id.in_(part) if part is not None else literal(True))
    engine = connection.engine
    per_model = percentiles(
        engine=engine,
        value=value,
        groups=[C.session_id, C.model],
        where=where,
        quantiles=(0.95,),
        connection=connection,
    )
    overall = percentiles(
        engine=engine,
        value=value,
        groups=[C.session_id],
        where=where,
        quantiles=(0.95,),
        connection=connection,
    )
    overall["model"] = "*"
    values = [
        {"s": r["session_id"], "m": r["model"], "v": float(r["p95"])}
        for frame in (per_model, overall)
        for r in frame.to_dict("records")
    ]
    if values:
        connection.execute(
            RS.update()
            .where(RS.c.session_id == bindparam("s"), RS.c.model == bindparam("m"))
            .values(latency_p95_ms=bindparam("v")),
            values,
        )


def _rebuild_users(connection: Connection, users: list[str] | None) -> None:
    """Recompute the rollup_users rows of `users` (None: every user) from rollup_sessions."""
    parts = [None] if users is None else list(_chunked(users))
    for part in parts:
        connection.execute(
            delete(RU).where(RU.c.user_id.in_(part) if part is not None else literal(True))
        )
        connection.execute(
            insert(RU).from_select(
                [
                    "user_id",
                    "model",
                    "sessions",
                    "calls",
                    "tokens",
                    "cost_usd",
                    "unpriced_calls",
                    "first_call",
                    "last_call",
                ],
                select(
                    RS.c.user_id,
                    RS.c.model,
                    func.count(),
                    func.sum(RS.c.calls),
                    func.sum(RS.c.tokens),
                    func.sum(RS.c.cost_usd),
                    func.sum(RS.c.unpriced_calls),
                    func.min(RS.c.first_call),
                    func.max(RS.c.last_call),
                )
                .where(RS.c.user_id.in_(part) if part is not None else literal(True))
                .group_by(RS.c.user_id, RS.c.model),
            )
        )


def _chunked(values: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i : i + CHUNK]


def _hourly_snapshot(
    connection: Connection, ranges: list[tuple[datetime, datetime]]
) -> set[tuple[Any, ...]]:
    """The rollup_session_hourly rows of the given ranges, to tell which sessions changed."""
    out: set[tuple[Any, ...]] = set()
    for start, end in ranges:
        out.update(
            tuple(row)
            for row in connection.execute(
                select(H.session_id, H.user_id, *[H[c] for c in SESSION_COLUMNS[1:]]).where(
                    H.hour >= start, H.hour < end
                )
            )
        )
    return out


# Refresh ------------------------------------------------------------------------------------


def refresh_hours(engine: Engine) -> int:
    """Recompute every dirty hour, the sessions and users whose figures changed with them, and
    queue the days that hold a dirty hour for settle_days(). Returns how many hours."""
    with engine.begin() as connection:
        # Taken inside this transaction: a write that lands meanwhile marks its hour again.
        hours = list(connection.execute(delete(RollupDirty).returning(RollupDirty.hour)).scalars())
        if not hours:
            return 0
        bulk = _recompute(connection, hours)
    if connection.dialect.name == "postgresql" and bulk:
        # A bulk load leaves the new rows' pages not all-visible, so the counts' index-only
        # scans would visit the heap until autovacuum came by: set the visibility map now.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as autocommit:
            for name in ("rollup_sessions", "rollup_users", "rollup_session_hourly"):
                autocommit.exec_driver_sql(f"VACUUM {name}")
    return len(hours)


# Every rollup table (rollup_dirty and rollup_dirty_days are queues, not rollups).
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
    """Recompute one empty hour (WARM_HOUR) in a transaction that is rolled back, so that this
    engine has compiled and cached the refresh's statements before the first refresh after a
    call: at 10M calls on Postgres that first refresh took 53-63 ms against 32 for the next
    ones. The app calls it when it opens its database."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            _recompute(connection, [WARM_HOUR])
            # An empty hour changes no session: rebuild one that does not exist.
            _rebuild_sessions(connection, [""])
            _rebuild_users(connection, [""])
        finally:
            transaction.rollback()


def _recompute(connection: Connection, hours: list[datetime]) -> bool:
    """refresh_hours' work for `hours`, inside the caller's transaction. Returns whether it was
    a bulk refresh."""
    bulk = len(hours) > 48
    # A bulk refresh recomputes the whole span at once (hours in it that were not dirty
    # come out the same): one pass instead of one per gap in the data.
    ranges = (
        [(min(hours), max(hours) + timedelta(hours=1))]
        if bulk
        else _ranges(hours, timedelta(hours=1))
    )
    before = set() if bulk else _hourly_snapshot(connection, ranges)
    for start, end in ranges:
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
    _percentiles(connection, "hour", ranges)
    changed: list[str] | None = None
    if not bulk:
        after = _hourly_snapshot(connection, ranges)
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
    module = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(
        module.insert(RollupDirtyDays).on_conflict_do_nothing(),
        [{"day": d} for d in days],
    )
    if connection.dialect.name == "postgresql" and bulk:
        # After a bulk load the planner's row estimates for the rollups are far off.
        for name in TABLES:
            connection.exec_driver_sql(f"ANALYZE {name}")
    return bulk


def settle_days(engine: Engine) -> int:
    """Recompute the day percentiles of every queued day. Returns how many days."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # One settler at a time across processes; the others leave the days to it.
            got = connection.execute(select(func.pg_try_advisory_xact_lock(SETTLE_LOCK))).scalar()
            if not got:
                return 0
        days = list(connection.execute(select(RollupDirtyDays.day)).scalars())
        if not days:
            return 0
        connection.execute(delete(RollupDirtyDays).where(RollupDirtyDays.day.in_(days)))
        day_ranges = _ranges(days, timedelta(days=1))
        for start, end in day_ranges:
            connection.execute(
                delete(RollupPercentiles).where(
                    RollupPercentiles.unit == "day",
                    RollupPercentiles.bucket >= start,
                    RollupPercentiles.bucket < end,
                )
            )
        _percentiles(connection, "day", day_ranges)
        if connection.dialect.name == "postgresql" and len(days) > 2:
            connection.exec_driver_sql("ANALYZE rollup_percentiles")
    return len(days)


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


_settling: set[str] = set()
_settling_lock = threading.Lock()


def _settle_in_background(engine: Engine) -> None:
    key = engine.url.render_as_string(hide_password=True)
    with _settling_lock:
        if key in _settling:
            return
        _settling.add(key)

    def run() -> None:
        try:
            settle_days(engine)
        except Exception:  # a page view never fails for it; the next one tries again
            log.exception("settling day percentiles failed")
        finally:
            with _settling_lock:
                _settling.discard(key)

    threading.Thread(target=run, name="settle-days", daemon=True).start()


def ensure_fresh(engine: Engine) -> None:
    """Refresh the dirty hours (one indexed lookup when nothing is dirty; an hour's work when a
    call arrived) and settle queued days in a background thread: a reader of a queued day
    computes its percentiles from the raw rows meanwhile (data.analytics.source.stored_percentiles).
    Inside data.analytics.parallel_reads.fresh_view, which did this once for the whole view, it
    returns."""
    if is_fresh(engine):
        return
    with engine.connect() as connection:
        dirty = connection.execute(select(literal(1)).select_from(RollupDirty).limit(1)).first()
        queued = connection.execute(
            select(literal(1)).select_from(RollupDirtyDays).limit(1)
        ).first()
    if dirty is not None:
        refresh_hours(engine)
    if dirty is not None or queued is not None:
        _settle_in_background(engine)
