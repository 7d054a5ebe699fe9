"""Latency figures from the database: percentiles over time, error rate, slowest calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy import Engine, String, and_, literal, select, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from data.analytics.filters import Filters
from data.analytics.percentiles import percentiles
from data.analytics.source import source_for, stored_percentiles, to_frame
from data.analytics.timebucket import bucket
from data.store.orm import AgentEvent, ModelCall

C = ModelCall.__table__.c
METRICS: dict[str, str] = {
    "model": "Model latency",
    "ttft": "Time to first token",
    "summarization": "Summarization",
    "memory": "Memory recall",
    "tool": "Tool calls",
}
# Memory recall and tool calls are agent_events, grouped by their name (the tool; "memory").
EVENT_KINDS = {"memory": "memory_recall", "tool": "tool_call"}
E = AgentEvent.__table__.c


def _events(metric: str, filters: Filters) -> ColumnElement[bool]:
    parts = [
        E.kind == EVENT_KINDS[metric],
        E.status == "ok",
        E.ts >= filters.start,
        E.ts < filters.end,
    ]
    if filters.user:
        parts.append(E.user_id == filters.user)
    if filters.session:
        parts.append(E.session_id == filters.session)
    return and_(*parts)


def _metric(metric: str, filters: Filters):  # type: ignore[no-untyped-def]
    ok = and_(filters.conditions(), C.status == "ok")
    if metric == "model":
        return C.latency_ms, and_(ok, C.purpose == "chat")
    if metric == "ttft":
        return C.ttft_ms, and_(ok, C.purpose == "chat")
    if metric == "summarization":
        return C.latency_ms, and_(ok, C.purpose == "summarize")
    raise ValueError(f"unknown latency metric {metric!r}")


ROLLUP_METRIC = {"model": "latency", "ttft": "ttft", "summarization": "summarize"}
SUMMARY_MAX_SPAN = timedelta(days=3)


def latency_over_time(*, engine: Engine, filters: Filters, metric: str) -> pd.DataFrame:
    """p50/p95/p99 in ms per bucket and model, computed inside the database: exact per-bucket
    percentiles from the rollup, or from the raw rows for views the rollup cannot serve."""
    if metric in EVENT_KINDS:
        period = bucket(E.ts, dialect=engine.dialect.name, unit=filters.unit).label("bucket")
        frame = percentiles(
            engine=engine,
            value=E.latency_ms,
            groups=[period, E.name.label("model")],
            where=_events(metric, filters),
        )
        frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
        return frame.rename(columns={"n": "calls"})
    stored = stored_percentiles(engine, filters, ROLLUP_METRIC[metric], per_model=True)
    if stored is not None:
        return stored.rename(columns={"n": "calls"})[
            ["bucket", "model", "calls", "p50", "p95", "p99"]
        ]
    value, where = _metric(metric, filters)
    period = bucket(C.ts, dialect=engine.dialect.name, unit=filters.unit).label("bucket")
    frame = percentiles(engine=engine, value=value, groups=[period, C.model], where=where)
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame.rename(columns={"n": "calls"})


def latency_summary(*, engine: Engine, filters: Filters, metric: str) -> pd.DataFrame | None:
    """p50/p95/p99 in ms per model over the whole range, for ranges up to 3 days (None beyond:
    percentiles of a long range cannot come from rollups, and a raw scan is too slow)."""
    if filters.span > SUMMARY_MAX_SPAN and not filters.by_user_or_session:
        return None
    if metric in EVENT_KINDS:
        return percentiles(
            engine=engine,
            value=E.latency_ms,
            groups=[E.name.label("model")],
            where=_events(metric, filters),
        ).rename(columns={"n": "calls"})
    value, where = _metric(metric, filters)
    return percentiles(engine=engine, value=value, groups=[C.model], where=where).rename(
        columns={"n": "calls"}
    )


def error_rate_over_time(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Per bucket and model: calls, failed calls and the error rate (%)."""
    src = source_for(engine, filters)
    c = src.c
    period = bucket(c[src.time], dialect=engine.dialect.name, unit=filters.unit).label("bucket")
    query = (
        select(period, c.model, src.calls(), src.count_if(c.status == "error"))
        .where(src.where(filters))
        .group_by(period, c.model)
        .order_by(period, c.model)
    )
    frame = to_frame(engine, query, ["bucket", "model", "calls", "errors"])
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    frame["error_rate"] = (100.0 * frame["errors"] / frame["calls"]).astype(float)
    return frame


def _time_range(engine: Engine, filters: Filters) -> list[ColumnElement[bool]]:
    if engine.dialect.name == "sqlite" and filters.span > timedelta(days=2):
        # Over a long range, walking the latency index from the top finds the slowest rows in
        # range almost at once, but SQLite's planner would scan the range by time and sort it.
        # Comparing `ts || ''` (the very text SQLite stores) keeps it off the time index.
        stamp = type_coerce(C.ts.op("||")(literal("", String)), String)
        return [stamp >= _stored(filters.start), stamp < _stored(filters.end)]
    return [C.ts >= filters.start, C.ts < filters.end]


def _stored(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


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
        .where(filters.conditions(with_time=False), *_time_range(engine, filters))
        .order_by(C.latency_ms.desc(), C.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        frame = pd.DataFrame(
            connection.execute(query).all(), columns=[c.name for c in query.selected_columns]
        )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="mixed")
    # Numbers, with a missing TTFT (a call that streamed nothing) as NaN: shown blank, not "None".
    frame["ttft_ms"] = pd.to_numeric(frame["ttft_ms"], errors="coerce")
    return frame
