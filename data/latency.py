"""Latency figures from the database: percentiles over time, error rate, slowest calls."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from sqlalchemy import Engine, and_, case, func, select

from data.filters import Filters
from data.models import ModelCall
from data.percentiles import percentiles
from data.timebucket import bucket

C = ModelCall.__table__.c
Metric = Literal["model", "ttft", "summarization"]
METRICS: dict[str, str] = {
    "model": "Model latency",
    "ttft": "Time to first token",
    "summarization": "Summarization",
}


def _metric(metric: str, filters: Filters):  # type: ignore[no-untyped-def]
    ok = and_(filters.conditions(), C.status == "ok")
    if metric == "model":
        return C.latency_ms, and_(ok, C.purpose == "chat")
    if metric == "ttft":
        return C.ttft_ms, and_(ok, C.purpose == "chat")
    if metric == "summarization":
        return C.latency_ms, and_(ok, C.purpose == "summarize")
    raise ValueError(f"unknown latency metric {metric!r}")


def latency_over_time(*, engine: Engine, filters: Filters, metric: str) -> pd.DataFrame:
    """p50/p95/p99 in ms per bucket and model, computed inside the database."""
    value, where = _metric(metric, filters)
    period = bucket(C.ts, dialect=engine.dialect.name, unit=filters.unit).label("bucket")
    frame = percentiles(engine=engine, value=value, groups=[period, C.model], where=where)
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame.rename(columns={"n": "calls"})


def latency_summary(*, engine: Engine, filters: Filters, metric: str) -> pd.DataFrame:
    """p50/p95/p99 in ms per model over the whole range."""
    value, where = _metric(metric, filters)
    return percentiles(engine=engine, value=value, groups=[C.model], where=where).rename(
        columns={"n": "calls"}
    )


def error_rate_over_time(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Per bucket and model: calls, failed calls and the error rate (%)."""
    period = bucket(C.ts, dialect=engine.dialect.name, unit=filters.unit).label("bucket")
    query = (
        select(period, C.model, func.count(), func.sum(case((C.status == "error", 1), else_=0)))
        .where(filters.conditions())
        .group_by(period, C.model)
        .order_by(period, C.model)
    )
    with engine.connect() as connection:
        frame = pd.DataFrame(
            connection.execute(query).all(), columns=["bucket", "model", "calls", "errors"]
        )
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    frame["error_rate"] = 100.0 * frame["errors"] / frame["calls"]
    return frame


def slowest_calls(*, engine: Engine, filters: Filters, limit: int = 50) -> pd.DataFrame:
    """The slowest calls, each with the session to open."""
    query = (
        select(
            C.ts,
            C.latency_ms,
            C.ttft_ms,
            C.model,
            C.purpose,
            C.status,
            C.user_id,
            C.session_id,
            C.turn,
            C.input_tokens,
            C.output_tokens,
            C.error,
        )
        .where(filters.conditions())
        .order_by(C.latency_ms.desc(), C.id)
        .limit(limit)
    )
    with engine.connect() as connection:
        frame = pd.DataFrame(
            connection.execute(query).all(), columns=[c.name for c in query.selected_columns]
        )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="mixed")
    return frame
