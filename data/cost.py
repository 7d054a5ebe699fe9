"""Cost page figures: one function per figure, used by the page, its CSV export and the tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, Integer, and_, case, func, select
from sqlalchemy.sql.elements import ColumnElement

from data.models import ModelCall
from data.timebucket import Unit, bucket

C = ModelCall.__table__.c


@dataclass(frozen=True, slots=True)
class CostTotals:
    calls: int
    input_tokens: int  # includes cached input tokens, as providers report them
    cached_input_tokens: int
    output_tokens: int
    cost_usd: float  # sum over priced calls only
    unpriced_calls: int  # calls whose cost is unknown: never counted as 0
    errors: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _window(start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(C.ts >= start, C.ts < end)


def _unpriced() -> ColumnElement[int]:
    return func.sum(case((C.cost_status == "unknown", 1), else_=0)).cast(Integer)


def cost_totals(*, engine: Engine, start: datetime, end: datetime) -> CostTotals:
    """Calls, tokens and priced cost in [start, end)."""
    query = select(
        func.count(),
        func.coalesce(func.sum(C.input_tokens), 0),
        func.coalesce(func.sum(C.cached_input_tokens), 0),
        func.coalesce(func.sum(C.output_tokens), 0),
        func.coalesce(func.sum(C.cost_usd), 0.0),
        func.coalesce(_unpriced(), 0),
        func.coalesce(func.sum(case((C.status == "error", 1), else_=0)), 0),
    ).where(_window(start, end))
    with engine.connect() as connection:
        row = connection.execute(query).one()
    return CostTotals(
        calls=int(row[0]),
        input_tokens=int(row[1]),
        cached_input_tokens=int(row[2]),
        output_tokens=int(row[3]),
        cost_usd=float(row[4]),
        unpriced_calls=int(row[5]),
        errors=int(row[6]),
    )


def cost_over_time(
    *, engine: Engine, start: datetime, end: datetime, unit: Unit = "day"
) -> pd.DataFrame:
    """Per time bucket and model: calls, tokens and priced cost (columns: bucket, model, ...)."""
    period = bucket(C.ts, dialect=engine.dialect.name, unit=unit).label("bucket")
    query = (
        select(
            period,
            C.model,
            func.count().label("calls"),
            func.sum(C.input_tokens).label("input_tokens"),
            func.sum(C.output_tokens).label("output_tokens"),
            func.coalesce(func.sum(C.cost_usd), 0.0).label("cost_usd"),
        )
        .where(_window(start, end))
        .group_by(period, C.model)
        .order_by(period, C.model)
    )
    with engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(query).mappings().all())
    if frame.empty:
        return pd.DataFrame(
            columns=[
                "bucket",
                "model",
                "calls",
                "input_tokens",
                "output_tokens",
                "tokens",
                "cost_usd",
            ]
        )
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    frame["tokens"] = frame["input_tokens"] + frame["output_tokens"]
    return frame


def cost_by_model(*, engine: Engine, start: datetime, end: datetime) -> pd.DataFrame:
    """One row per model: calls, token types, priced cost, unpriced calls, cost per 1k calls."""
    query = (
        select(
            C.model,
            C.provider,
            func.count().label("calls"),
            func.sum(C.input_tokens).label("input_tokens"),
            func.sum(C.cached_input_tokens).label("cached_input_tokens"),
            func.sum(C.output_tokens).label("output_tokens"),
            func.coalesce(func.sum(C.cost_usd), 0.0).label("cost_usd"),
            _unpriced().label("unpriced_calls"),
            func.sum(case((C.status == "error", 1), else_=0)).label("errors"),
        )
        .where(_window(start, end))
        .group_by(C.model, C.provider)
        .order_by(func.coalesce(func.sum(C.cost_usd), 0.0).desc(), C.model)
    )
    with engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(query).mappings().all())
    columns = [
        "model",
        "provider",
        "calls",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "tokens",
        "cost_usd",
        "cost_per_1k_calls",
        "unpriced_calls",
        "errors",
    ]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame["tokens"] = frame["input_tokens"] + frame["output_tokens"]
    frame["cost_per_1k_calls"] = 1000 * frame["cost_usd"] / frame["calls"]
    return frame[columns]


def has_calls(*, engine: Engine) -> bool:
    """Whether any model call was ever recorded (tells an empty range from an empty database)."""
    with engine.connect() as connection:
        return connection.execute(select(C.id).limit(1)).first() is not None
