"""Context-window figures: how full each request was, and what summarization did about it."""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import Engine, Float, and_, case, cast, func, select

from data.analytics import sessions
from data.analytics.filters import Filters
from data.analytics.freshness import ensure_fresh
from data.analytics.measures import BIN_WIDTH, PERCENT, bin_of
from data.analytics.percentiles import percentiles
from data.analytics.source import isum, source_for, stored_percentiles, to_frame
from data.analytics.timebucket import bucket
from data.store.orm import ModelCall
from data.store.orm_rollups import RollupContextBins

C = ModelCall.__table__.c
B = RollupContextBins.__table__
__all__ = ["BIN_WIDTH", "PERCENT"]  # the pages read both from here


def _chat(filters: Filters) -> Any:
    return and_(
        filters.conditions(), C.purpose == "chat", C.status == "ok", C.context_window.is_not(None)
    )


def _bins(engine: Engine, filters: Filters, group: list[Any]) -> Any:
    """(group..., bin, calls) rows: from the bin rollup, or from raw rows for a user view."""
    if filters.by_user_or_session:
        b = bin_of(engine.dialect.name).label("bin")
        return (
            select(*group, b, func.count().label("calls"))
            .where(_chat(filters))
            .group_by(*group, b)
            .subquery()
        )
    ensure_fresh(engine)
    return select(*group, B.c.bin, B.c.calls).where(filters.conditions(B, "hour")).subquery()


def context_histogram(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Chat calls per 5-point context % bin (bin 70 holds 70 <= % < 75; 100 holds >= 100)."""
    t = _bins(engine, filters, []).c
    query = select(t.bin, isum(t.calls)).group_by(t.bin).order_by(t.bin)
    return to_frame(engine, query, ["bin", "calls"])


def share_above(*, engine: Engine, filters: Filters, trigger_percent: float) -> tuple[int, int]:
    """(chat calls at or above the trigger, all chat calls)."""
    if trigger_percent % BIN_WIDTH == 0:  # the bins answer exactly
        t = _bins(engine, filters, []).c
        query = select(
            func.coalesce(func.sum(case((t.bin >= trigger_percent, t.calls), else_=0)), 0),
            func.coalesce(isum(t.calls), 0),
        )
    else:
        query = select(
            func.coalesce(func.sum(case((trigger_percent <= PERCENT, 1), else_=0)), 0), func.count()
        ).where(_chat(filters))
    with engine.connect() as connection:
        above, total = connection.execute(query).one()
    return int(above), int(total)


def context_over_time(*, engine: Engine, filters: Filters, trigger_percent: float) -> pd.DataFrame:
    """Per bucket: chat calls, p50 and p95 context %, and the share at or above the trigger."""
    pct = stored_percentiles(engine, filters, "context", per_model=False)
    if pct is None:
        period = bucket(C.ts, dialect=engine.dialect.name, unit=filters.unit).label("bucket")
        pct = percentiles(
            engine=engine,
            value=PERCENT,
            groups=[period],
            where=_chat(filters),
            quantiles=(0.5, 0.95),
        )
        pct["bucket"] = pd.to_datetime(pct["bucket"], utc=True)
        share = to_frame(
            engine,
            select(period, func.avg(case((trigger_percent <= PERCENT, 1.0), else_=0.0)))
            .where(_chat(filters))
            .group_by(period),
            ["bucket", "share_above_trigger"],
        )
        share["bucket"] = pd.to_datetime(share["bucket"], utc=True)
    else:
        t = _bins(engine, filters, [B.c.hour]).c
        period = bucket(t.hour, dialect=engine.dialect.name, unit=filters.unit).label("bucket")
        share = to_frame(
            engine,
            select(
                period,
                cast(func.sum(case((t.bin >= trigger_percent, t.calls), else_=0)), Float)
                / isum(t.calls),
            ).group_by(period),
            ["bucket", "share_above_trigger"],
        )
        share["bucket"] = pd.to_datetime(share["bucket"], utc=True)
        pct = pct.drop(columns=["model", "p99"])
    frame = pct.merge(share, on="bucket", how="left").rename(columns={"n": "calls"})
    return frame[["bucket", "calls", "p50", "p95", "share_above_trigger"]]


def sessions_by_peak_context(
    *, engine: Engine, filters: Filters, limit: int = 1000
) -> pd.DataFrame:
    """Sessions ranked by the fullest successful chat request they sent (the top `limit`, read
    through the per-session rollup's peak-context index)."""
    return sessions.ranked_by_peak_context(engine=engine, filters=filters, limit=limit)


def session_growth(*, engine: Engine, session_id: str) -> pd.DataFrame:
    """Context tokens of each chat request of a session, by turn, and where it was summarized."""
    query = (
        select(
            C.turn, C.purpose, C.context_tokens, C.context_window, C.input_tokens, C.output_tokens
        )
        .where(C.session_id == session_id, C.status == "ok")
        .order_by(C.turn, C.ts, C.id)
    )
    return to_frame(
        engine,
        query,
        ["turn", "purpose", "context_tokens", "context_window", "input_tokens", "output_tokens"],
    )


def summarization_over_time(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Per bucket: summarization events, tokens saved, summarizer latency (p50/p95) and cost.

    Tokens saved by one event = the tokens it folded (its input) minus the summary it wrote
    (its output): that is how much shorter every later request of the session became."""
    src = source_for(engine, filters)
    c = src.c
    period = bucket(c[src.time], dialect=engine.dialect.name, unit=filters.unit).label("bucket")
    sums = to_frame(
        engine,
        select(
            period,
            src.calls(),
            func.sum(c.input_tokens) - func.sum(c.output_tokens),
            func.coalesce(func.sum(c.cost_usd), 0.0),
            src.count_if(c.status == "error"),
        )
        .where(src.where(filters), c.purpose == "summarize")
        .group_by(period)
        .order_by(period),
        ["bucket", "events", "tokens_saved", "cost_usd", "errors"],
    )
    sums["bucket"] = pd.to_datetime(sums["bucket"], utc=True)
    lat = stored_percentiles(engine, filters, "summarize", per_model=False)
    if lat is None:
        raw_period = bucket(C.ts, dialect=engine.dialect.name, unit=filters.unit).label("bucket")
        lat = percentiles(
            engine=engine,
            value=C.latency_ms,
            groups=[raw_period],
            where=and_(filters.conditions(), C.purpose == "summarize", C.status == "ok"),
            quantiles=(0.5, 0.95),
        )
        lat["bucket"] = pd.to_datetime(lat["bucket"], utc=True)
    frame = sums.merge(lat[["bucket", "p50", "p95"]], on="bucket", how="left").rename(
        columns={"p50": "latency_p50_ms", "p95": "latency_p95_ms"}
    )
    return frame
