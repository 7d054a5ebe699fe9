"""What reviewers said: every score with its conversation's facts, the scores of one item, and
each reviewer's progress."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd
from sqlalchemy import (
    Engine,
    and_,
    exists,
    func,
    select,
)

from data.analytics.freshness import ensure_fresh
from data.store.orm import utcnow
from data.store.orm_rollups import RollupSessions
from data.store.orm_team import ReviewScore
from data.workflows.review import K, Q, S
from data.workflows.review_candidates import _typed_facts


def item_scores(*, engine: Engine, item_id: int, reviewer: str) -> pd.DataFrame:
    """The other reviewers' scores of an item (reviewer, score, comment, created_at), but only
    once `reviewer` has scored it, so that reviews stay independent. Empty before."""
    columns = ["reviewer", "score", "comment", "created_at"]
    who = (reviewer or "").strip()
    with engine.connect() as connection:
        scored = connection.execute(
            select(S.id).where(S.item_id == item_id, S.reviewer == who)
        ).first()
        rows = (
            []
            if scored is None
            else connection.execute(
                select(S.reviewer, S.score, S.comment, S.created_at)
                .where(S.item_id == item_id, S.reviewer != who)
                .order_by(S.created_at, S.id)
            ).all()
        )
    return pd.DataFrame([tuple(r) for r in rows], columns=columns)


def progress(
    *, engine: Engine, day_start: datetime, start: datetime, end: datetime
) -> pd.DataFrame:
    """Per reviewer: done_today (scores in [day_start, day_start + 1 day)), done_in_range
    (scores in [start, end)), claimed (live claims now) and pending (open items reserved for
    them that they have not scored). Reviewers with none of these are not listed."""
    now = utcnow()
    day_end = day_start + timedelta(days=1)

    def scored(since: datetime, until: datetime) -> Any:
        return (
            select(S.reviewer, func.count())
            .where(S.created_at >= since, S.created_at < until)
            .group_by(S.reviewer)
        )

    live = (
        select(K.reviewer, func.count())
        .where(K.ended_at.is_(None), K.expires_at > now)
        .group_by(K.reviewer)
    )
    scores = select(func.count()).where(S.item_id == Q.id).scalar_subquery()
    theirs = exists().where(S.item_id == Q.id, S.reviewer == Q.assigned_to)
    pending = (
        select(Q.assigned_to, func.count())
        .where(Q.assigned_to.is_not(None), ~theirs, scores < Q.reviews_required)
        .group_by(Q.assigned_to)
    )
    names = ["done_today", "done_in_range", "claimed", "pending"]
    with engine.connect() as connection:
        counts = {
            name: dict(connection.execute(query).all())
            for name, query in zip(
                names, (scored(day_start, day_end), scored(start, end), live, pending), strict=True
            )
        }
    reviewers = sorted(set().union(*counts.values()))
    return pd.DataFrame(
        {
            "reviewer": reviewers,
            **{name: [int(counts[name].get(r, 0)) for r in reviewers] for name in names},
        },
        columns=["reviewer", *names],
    )


SCORE_COLUMNS = [
    "score_id",
    "item_id",
    "session_id",
    "reviewer",
    "score",
    "comment",
    "created_at",
    "sync_state",
    "run_id",
    "feedback_uuid",
]


FACT_COLUMNS = ["user_id", "model", "started", "peak_context_percent", "summarized", "cost_usd"]


def scores_frame(
    *,
    engine: Engine,
    start: datetime,
    end: datetime,
    by: Literal["scored", "conversation"] = "scored",
    reviewer: str | None = None,
    models: Sequence[str] = (),
    user: str | None = None,
    session: str | None = None,
) -> pd.DataFrame:
    """Every score with its item, session, reviewer, score, comment, created_at, sync_state,
    run_id, feedback_uuid (its LangSmith feedback id) and the conversation's user_id, model,
    started, peak context %, summarized and cost (over all of its calls). `by="scored"` takes
    the scores given in [start, end) (a review round); `by="conversation"` the scores of
    conversations started in [start, end) (quality over time), optionally only those whose
    chat model is in `models`, of `user`, or of `session`. With `reviewer`, only that
    reviewer's scores (a reviewer's own list)."""
    ensure_fresh(engine)
    if by == "conversation":
        return _conversation_scores(
            engine, start, end, reviewer=reviewer, models=models, user=user, session=session
        )
    query = _scores_with_facts(keep_unmatched=True).where(S.created_at >= start, S.created_at < end)
    if reviewer is not None:
        query = query.where(S.reviewer == reviewer)
    return _read_scores(engine, query)


def _scores_with_facts(*, keep_unmatched: bool) -> Any:
    """The scores with their conversation's facts, joined in the database to the per-session
    rollup (the one definition of a session's figures), in score order. With
    `keep_unmatched`, a score whose conversation has no calls keeps its row, without facts."""
    rs = RollupSessions.__table__.c
    scores = ReviewScore.__table__
    join = scores.outerjoin if keep_unmatched else scores.join
    return (
        select(
            S.id,
            *[S[name] for name in SCORE_COLUMNS[1:]],
            rs.session_id,  # whether the conversation was found
            rs.user_id,
            rs.chat_model,
            rs.first_call,
            rs.peak_context_percent,
            rs.summarizations > 0,
            rs.cost_usd,
        )
        .select_from(
            join(RollupSessions.__table__, and_(rs.session_id == S.session_id, rs.model == "*"))
        )
        .order_by(S.id)
    )


def _read_scores(engine: Engine, query: Any) -> pd.DataFrame:
    """A _scores_with_facts query's rows as SCORE_COLUMNS + FACT_COLUMNS, in pandas types."""
    with engine.connect() as connection:
        frame = pd.DataFrame(
            [tuple(r) for r in connection.execute(query)],
            columns=[*SCORE_COLUMNS, "_found", *FACT_COLUMNS],
        )
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    found = frame.pop("_found").notna()
    frame = _typed_facts(frame)
    if not found.all():  # a conversation without calls: its facts are missing, not False
        frame["summarized"] = frame["summarized"].astype(object).where(found, float("nan"))
    return frame


def _conversation_scores(
    engine: Engine,
    start: datetime,
    end: datetime,
    *,
    reviewer: str | None,
    models: Sequence[str],
    user: str | None,
    session: str | None,
) -> pd.DataFrame:
    """scores_frame(by="conversation"): the scores joined in the database to the per-session
    rollup (the one definition of a session's figures) and chosen there by when the
    conversation started (its first call), so only the rows wanted come back, however many
    scores there are."""
    rs = RollupSessions.__table__.c
    query = _scores_with_facts(keep_unmatched=False).where(
        rs.first_call >= start, rs.first_call < end
    )
    if reviewer is not None:
        query = query.where(S.reviewer == reviewer)
    if models:
        query = query.where(rs.chat_model.in_(list(models)))
    if user:
        query = query.where(rs.user_id == user)
    if session:
        query = query.where(S.session_id == session)
    return _read_scores(engine, query)
