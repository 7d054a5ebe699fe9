"""Context-window figures: how full each request was, and what summarization did about it."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine, Float, Integer, and_, case, cast, func, select

from data.filters import Filters
from data.models import ModelCall
from data.percentiles import percentiles
from data.timebucket import bucket

C = ModelCall.__table__.c
# Context % of one request: its input tokens over the model's input window (a peak, not a sum).
PERCENT = 100.0 * cast(C.context_tokens, Float) / func.nullif(C.context_window, 0)
BIN_WIDTH = 5


def _chat(filters: Filters):  # type: ignore[no-untyped-def]
    return and_(
        filters.conditions(), C.purpose == "chat", C.status == "ok", C.context_window.is_not(None)
    )


def _frame(engine: Engine, query, columns: list[str]) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return pd.DataFrame(rows, columns=columns)


def context_histogram(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Chat calls per 5-point context % bin (bin 70 holds 70 <= % < 75; 100 holds >= 100)."""
    low = (
        cast(func.floor(func.min(PERCENT, 100.0) / BIN_WIDTH), Integer) * BIN_WIDTH
        if engine.dialect.name == "sqlite"
        else cast(func.floor(func.least(PERCENT, 100.0) / BIN_WIDTH), Integer) * BIN_WIDTH
    )
    query = (
        select(low.label("bin"), func.count().label("calls"))
        .where(_chat(filters))
        .group_by(low)
        .order_by(low)
    )
    return _frame(engine, query, ["bin", "calls"])


def context_over_time(*, engine: Engine, filters: Filters, trigger_percent: float) -> pd.DataFrame:
    """Per bucket: chat calls, p50 and p95 context %, and the share at or above the trigger."""
    period = bucket(C.ts, dialect=engine.dialect.name, unit=filters.unit).label("bucket")
    pct = percentiles(
        engine=engine, value=PERCENT, groups=[period], where=_chat(filters), quantiles=(0.5, 0.95)
    )
    share = _frame(
        engine,
        select(period, func.avg(case((trigger_percent <= PERCENT, 1.0), else_=0.0)))
        .where(_chat(filters))
        .group_by(period),
        ["bucket", "share_above_trigger"],
    )
    frame = pct.merge(share, on="bucket", how="left").rename(columns={"n": "calls"})
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame


def share_above(*, engine: Engine, filters: Filters, trigger_percent: float) -> tuple[int, int]:
    """(chat calls at or above the trigger, all chat calls)."""
    query = select(
        func.coalesce(func.sum(case((trigger_percent <= PERCENT, 1), else_=0)), 0), func.count()
    ).where(_chat(filters))
    with engine.connect() as connection:
        above, total = connection.execute(query).one()
    return int(above), int(total)


def sessions_by_peak_context(
    *, engine: Engine, filters: Filters, limit: int = 1000
) -> pd.DataFrame:
    """Sessions ranked by the fullest request they sent."""
    summaries = func.sum(case((C.purpose == "summarize", 1), else_=0))
    peak = func.max(case((and_(C.purpose == "chat", C.status == "ok"), PERCENT)))
    query = (
        select(
            C.session_id,
            func.min(C.user_id),
            func.min(C.model),
            peak,
            func.count(),
            summaries,
            func.max(C.turn),
        )
        .where(filters.conditions())
        .group_by(C.session_id)
        .having(peak.is_not(None))
        .order_by(peak.desc(), C.session_id)
        .limit(limit)
    )
    return _frame(
        engine,
        query,
        ["session", "user", "model", "peak_context_percent", "calls", "summarizations", "turns"],
    )


def session_growth(*, engine: Engine, session_id: str) -> pd.DataFrame:
    """Context tokens of each chat request of a session, by turn, and where it was summarized."""
    query = (
        select(
            C.turn, C.purpose, C.context_tokens, C.context_window, C.input_tokens, C.output_tokens
        )
        .where(C.session_id == session_id, C.status == "ok")
        .order_by(C.turn, C.ts, C.id)
    )
    return _frame(
        engine,
        query,
        ["turn", "purpose", "context_tokens", "context_window", "input_tokens", "output_tokens"],
    )


def summarization_over_time(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Per bucket: summarization events, tokens saved, summarizer latency (p50) and cost.

    Tokens saved by one event = the tokens it folded (its input) minus the summary it wrote
    (its output): that is how much shorter every later request of the session became."""
    period = bucket(C.ts, dialect=engine.dialect.name, unit=filters.unit).label("bucket")
    where = and_(filters.conditions(), C.purpose == "summarize")
    sums = _frame(
        engine,
        select(
            period,
            func.count(),
            func.sum(C.input_tokens - C.output_tokens),
            func.coalesce(func.sum(C.cost_usd), 0.0),
            func.sum(case((C.status == "error", 1), else_=0)),
        )
        .where(where)
        .group_by(period),
        ["bucket", "events", "tokens_saved", "cost_usd", "errors"],
    )
    lat = percentiles(
        engine=engine,
        value=C.latency_ms,
        groups=[period],
        where=and_(where, C.status == "ok"),
        quantiles=(0.5, 0.95),
    )
    frame = sums.merge(lat.drop(columns="n"), on="bucket", how="left").rename(
        columns={"p50": "latency_p50_ms", "p95": "latency_p95_ms"}
    )
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    return frame
