"""Where a figure is computed from: the raw model_calls rows, or the exact hourly rollup.

Both expose the same columns (model, provider, purpose, status, cost_status, token sums and
cost), so one query serves both; only counting differs (a rollup row stands for `calls` rows)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy import BigInteger, Engine, Table, and_, case, cast, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from data.analytics.filters import Filters
from data.analytics.freshness import ensure_fresh
from data.analytics.measures import METRICS, floor
from data.analytics.percentiles import percentiles
from data.analytics.rollups import dirty_days, dirty_percentile_hours
from data.store.orm import ModelCall
from data.store.orm_rollups import RollupHourly, RollupPercentiles


def isum(column: Any) -> ColumnElement[Any]:
    """A sum of integers that stays an integer (Postgres widens bigint sums to numeric, which
    costs a Decimal per value on the way out)."""
    return cast(func.sum(column), BigInteger)


@dataclass(frozen=True)
class Source:
    table: Table
    time: str
    rollup: bool

    @property
    def c(self) -> Any:
        return self.table.c

    def calls(self) -> ColumnElement[Any]:
        return isum(self.c.calls) if self.rollup else func.count()

    def count_if(self, condition: ColumnElement[bool]) -> ColumnElement[Any]:
        weight = self.c.calls if self.rollup else 1
        return func.coalesce(isum(case((condition, weight), else_=0)), 0)

    def where(self, filters: Filters) -> ColumnElement[bool]:
        return filters.conditions(self.table, self.time)


C = ModelCall.__table__.c
RAW = Source(ModelCall.__table__, "ts", rollup=False)  # type: ignore[arg-type]
HOURLY = Source(RollupHourly.__table__, "hour", rollup=True)  # type: ignore[arg-type]


def source_for(engine: Engine, filters: Filters) -> Source:
    """The hourly rollup unless the view filters by user or session (then the raw rows, which
    the (user_id, ts) index keeps small). Filters always cover whole hours."""
    if filters.by_user_or_session:
        return RAW
    ensure_fresh(engine)
    return HOURLY


def to_frame(engine: Engine, query: Any, columns: list[str]) -> pd.DataFrame:
    """Run a query into a DataFrame with plain numbers (Postgres sums of integers are numeric,
    which arrive as Decimal)."""
    with engine.connect() as connection:
        rows = [tuple(row) for row in connection.execute(query)]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for name in frame.columns:
        values = frame[name].dropna()
        if len(values) and isinstance(values.iloc[0], Decimal):
            numbers = pd.to_numeric(frame[name].map(float, na_action="ignore"))
            whole = numbers.dropna() % 1 == 0
            frame[name] = numbers.astype("Int64") if whole.all() else numbers
    return frame


def stored_percentiles(
    engine: Engine, filters: Filters, metric: str, *, per_model: bool
) -> pd.DataFrame | None:
    """Exact per-bucket percentiles from rollup_percentiles, or None when this view needs a
    grouping they do not hold (a user or session filter, several models pooled together, or
    day buckets cut by a range that does not start and end at midnight)."""
    if filters.by_user_or_session or (filters.unit == "day" and not filters.whole_days):
        return None
    if not per_model and len(filters.models) > 1:
        return None
    ensure_fresh(engine)
    p = RollupPercentiles.__table__.c
    where = [
        p.unit == filters.unit,
        p.metric == metric,
        p.bucket >= filters.start,
        p.bucket < filters.end,
    ]
    if per_model:
        where.append(p.model != "*")
        if filters.models:
            where.append(p.model.in_(filters.models))
    else:
        where.append(p.model == (filters.models[0] if filters.models else "*"))
    query = (
        select(p.bucket, p.model, p.n, p.p50, p.p95, p.p99)
        .where(*where)
        .order_by(p.bucket, p.model)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    frame = pd.DataFrame(rows, columns=["bucket", "model", "n", "p50", "p95", "p99"])
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    stale = (dirty_days if filters.unit == "day" else dirty_percentile_hours)(
        engine, filters.start, filters.end
    )
    if stale:
        frame = _with_fresh_buckets(engine, filters, metric, frame, stale, per_model=per_model)
    return frame


def _with_fresh_buckets(
    engine: Engine,
    filters: Filters,
    metric: str,
    frame: pd.DataFrame,
    buckets: list[Any],
    *,
    per_model: bool,
) -> pd.DataFrame:
    """The stored percentiles with the queued (not yet recomputed) days or hours replaced by
    their percentiles from the raw rows: exact whether or not settle_days() has run."""
    value, condition = METRICS[metric]
    step = pd.Timedelta(days=1) if filters.unit == "day" else pd.Timedelta(hours=1)
    starts = [
        pd.Timestamp(d).tz_convert("UTC")
        if pd.Timestamp(d).tzinfo
        else pd.Timestamp(d).tz_localize("UTC")
        for d in buckets
    ]
    in_buckets = or_(
        *[and_(C.ts >= s.to_pydatetime(), C.ts < (s + step).to_pydatetime()) for s in starts]
    )
    bucket = floor(C.ts, engine.dialect.name, filters.unit).label("bucket")
    groups = [bucket, C.model] if per_model else [bucket]
    fresh = percentiles(
        engine=engine,
        value=value,
        groups=groups,
        where=and_(condition, in_buckets, filters.conditions(with_time=False)),
    )
    fresh["bucket"] = pd.to_datetime(fresh["bucket"], utc=True, format="mixed")
    if not per_model:
        fresh["model"] = filters.models[0] if filters.models else "*"
    kept = frame[~frame["bucket"].isin(starts)]
    out = pd.concat([kept, fresh[["bucket", "model", "n", "p50", "p95", "p99"]]], ignore_index=True)
    out["n"] = out["n"].astype(int)
    for name in ("p50", "p95", "p99"):
        out[name] = out[name].astype(float)
    return out.sort_values(["bucket", "model"], ignore_index=True)
