"""Which conversations to review: the candidates of a range (newest first, with their cost,
context, thumbs and flags), their count, and the filters a reviewer's queue is built from."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import (
    Engine,
    exists,
    func,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

from data.analytics.filters import Filters
from data.analytics.freshness import ensure_fresh
from data.analytics.session_sql import session_relation
from data.analytics.sessions import count_sessions, fill_partial_latency
from data.store.orm_rollups import RollupSessions
from data.store.orm_team import FeedbackThumbs, ReviewItem
from data.workflows.review import Q, QueueFilters, ReviewInputError, S

CANDIDATE_COLUMNS = [
    "session_id",
    "user_id",
    "model",
    "started",
    "turns",
    "cost_usd",
    "latency_p95_ms",
    "peak_context_percent",
    "summarized",
    "thumbs_down",
    "reviews_done",
    "queued",
    "item_id",
]


def _typed_facts(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame with session facts (started, cost_usd, peak_context_percent, summarized) as
    read from the rollup, in their pandas types."""
    frame["started"] = pd.to_datetime(frame["started"], utc=True, format="mixed")
    for name in ("cost_usd", "peak_context_percent"):
        frame[name] = frame[name].astype(float)
    frame["summarized"] = frame["summarized"].astype(bool)
    return frame


def _candidate_query(filters: QueueFilters, first_from: datetime | None = None) -> Any:
    """Every conversation with a call in the range (user filter applied) with its figures over
    the calls in range and its queue state, before the other filters; with `first_from`, of
    the conversations wholly inside the range only those started at or after it."""
    rel = session_relation(
        Filters(start=filters.start, end=filters.end, user=filters.user), first_from=first_from
    )
    thumbs_down = exists().where(
        FeedbackThumbs.session_id == rel.c.session, FeedbackThumbs.score == 0
    )
    done = select(func.count()).where(S.item_id == Q.id).correlate(ReviewItem).scalar_subquery()
    query = select(
        rel.c.session.label("session_id"),
        rel.c.user.label("user_id"),
        rel.c.model,
        rel.c.first_call.label("started"),
        rel.c.turns,
        rel.c.cost_usd,
        rel.c.latency_p95_ms,
        rel.c.peak_context_percent,
        (rel.c.summarizations > 0).label("summarized"),
        thumbs_down.label("thumbs_down"),
        func.coalesce(done, 0).label("reviews_done"),
        Q.id.is_not(None).label("queued"),
        Q.id.label("item_id"),
        rel.c.partial,
    ).select_from(rel.outerjoin(ReviewItem, Q.session_id == rel.c.session))
    if filters.models:
        query = query.where(rel.c.model.in_(filters.models))
    return query, rel


def _typed(engine: Engine, frame: pd.DataFrame, filters: QueueFilters) -> pd.DataFrame:
    frame["started"] = pd.to_datetime(frame["started"], utc=True, format="mixed")
    for name in ("cost_usd", "latency_p95_ms", "peak_context_percent"):
        frame[name] = frame[name].astype(float)
    for name in ("summarized", "thumbs_down", "queued", "partial"):
        frame[name] = frame[name].astype(bool)
    frame["reviews_done"] = frame["reviews_done"].astype(int)
    frame["item_id"] = pd.array(frame["item_id"], dtype="Int64")
    frame = frame.rename(columns={"session_id": "session"})
    frame = fill_partial_latency(
        engine, frame, Filters(start=filters.start, end=filters.end, user=filters.user)
    )
    return frame.rename(columns={"session": "session_id"})


def candidates(*, engine: Engine, filters: QueueFilters, limit: int | None = None) -> pd.DataFrame:
    """One row per conversation matching `filters`: session_id, user_id, model, started, turns,
    cost_usd, latency_p95_ms, peak_context_percent, summarized, thumbs_down, reviews_done,
    queued, item_id (None when not queued); newest first; the first `limit` (all when None).

    Percentile thresholds are taken over all conversations of the range, model and user (before
    the other filters) with pandas' linear quantile, and a row must be strictly above them. A
    sample is drawn with random.Random(seed) from the matching conversations sorted by id, so
    the same seed and filters give the same sessions on any machine and database. Without
    thresholds or a sample the database filters, sorts and cuts the list (an index range scan
    of the per-session rollup); with them, every conversation of the range is read."""
    for pct in (filters.cost_above_pct, filters.latency_above_pct):
        if pct is not None and not 0 <= pct <= 100:
            raise ReviewInputError("A percentile is a number from 0 to 100.")
    if filters.sample is not None and filters.sample < 1:
        raise ReviewInputError("A sample has at least one conversation.")
    ensure_fresh(engine)
    whole = (
        filters.cost_above_pct is not None
        or filters.latency_above_pct is not None
        or filters.sample is not None
    )
    first_from = None
    if (
        not whole
        and limit is not None
        and limit > 0
        and not (filters.not_scored or filters.thumbs_down or filters.summarized)
    ):
        first_from = _newest_start(engine, filters, limit)
    query, rel = _candidate_query(filters, first_from)
    names = [*CANDIDATE_COLUMNS, "partial"]
    if not whole:
        query = query.where(*_flag_conditions(filters, rel))
        query = query.order_by(rel.c.first_call.desc(), rel.c.session)
        if limit is not None:
            query = query.limit(limit)
    with engine.connect() as connection:
        frame = pd.DataFrame([tuple(r) for r in connection.execute(query)], columns=names)
    frame = _typed(engine, frame, filters)
    if not whole:
        return frame[CANDIDATE_COLUMNS].reset_index(drop=True)
    keep = pd.Series(True, index=frame.index)
    for pct, column in (
        (filters.cost_above_pct, "cost_usd"),
        (filters.latency_above_pct, "latency_p95_ms"),
    ):
        if pct is not None:
            keep &= frame[column] > frame[column].quantile(pct / 100)
    if filters.not_scored:
        keep &= frame["reviews_done"] == 0
    if filters.thumbs_down:
        keep &= frame["thumbs_down"]
    if filters.summarized:
        keep &= frame["summarized"]
    frame = frame[keep]
    if filters.sample is not None and len(frame) > filters.sample:
        ids = sorted(frame["session_id"])
        chosen = set(random.Random(filters.seed).sample(ids, filters.sample))
        frame = frame[frame["session_id"].isin(chosen)]
    frame = frame.sort_values(["started", "session_id"], ascending=[False, True])
    if limit is not None:
        frame = frame.head(limit)
    return frame[CANDIDATE_COLUMNS].reset_index(drop=True)


def _newest_start(engine: Engine, filters: QueueFilters, limit: int) -> datetime | None:
    """When the `limit`-th newest conversation wholly inside the range started (of the
    filters' user and chat models), or None when there are fewer. The newest `limit`
    conversations of the range can only be those that started then or later, or straddle the
    range, so the candidate list reads those off the rollup's (model, first_call) index
    instead of every conversation of the range (10M calls, 90 days: 395,000 of them)."""
    rs = RollupSessions.__table__.c
    query = select(rs.first_call).where(
        rs.model == "*", rs.first_call >= filters.start, rs.last_call < filters.end
    )
    if filters.user:
        query = query.where(rs.user_id == filters.user)
    if filters.models:
        query = query.where(rs.chat_model.in_(filters.models))
    query = query.order_by(rs.first_call.desc()).offset(limit - 1).limit(1)
    with engine.connect() as connection:
        return connection.execute(query).scalar()  # type: ignore[no-any-return]


def count_candidates(*, engine: Engine, filters: QueueFilters) -> int:
    """How many conversations match `filters` (the whole list, however much a page shows)."""
    if (
        filters.cost_above_pct is not None
        or filters.latency_above_pct is not None
        or filters.sample is not None
    ):
        return len(candidates(engine=engine, filters=filters))
    ensure_fresh(engine)
    in_range = Filters(start=filters.start, end=filters.end, user=filters.user)
    rel = session_relation(in_range)
    flags = _flag_conditions(filters, rel)
    if not flags and not filters.models:
        # Every conversation in the range: the per-session table's own count, arm by arm on
        # the rollup's span index, not a count over the whole union.
        return count_sessions(engine=engine, filters=in_range)
    query = select(func.count()).select_from(rel).where(*flags)
    if filters.models:
        query = query.where(rel.c.model.in_(filters.models))
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def candidate_ids(*, engine: Engine, filters: QueueFilters) -> list[str]:
    """The ids of every conversation matching `filters`, newest first (to queue them all)."""
    return list(candidates(engine=engine, filters=filters)["session_id"])


def _flag_conditions(filters: QueueFilters, rel: Any) -> list[ColumnElement[bool]]:
    parts: list[ColumnElement[bool]] = []
    if filters.not_scored:
        parts.append(~exists().where(S.session_id == rel.c.session))
    if filters.thumbs_down:
        parts.append(
            exists().where(FeedbackThumbs.session_id == rel.c.session, FeedbackThumbs.score == 0)
        )
    if filters.summarized:
        parts.append(rel.c.summarizations > 0)
    return parts
