"""Feedback analytics: reviewer scores over time and by model, score against context %,
summarization and cost (quality against cost), the customers' thumbs-up rate, and all local
feedback in the shape of LangSmith's, to show beside what other tools wrote there.

Conversations are placed in time by their first model call, and answers by when they were
given, so "over time" shows the quality of the answers given then, whenever they were
reviewed."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import BigInteger, Engine, and_, cast, func, select

from data.analytics.agreement import AgreementReport, agreement
from data.analytics.filters import Filters
from data.analytics.freshness import fresh_view
from data.analytics.parallel_reads import gather
from data.analytics.timebucket import bucket
from data.store.orm_team import FeedbackThumbs
from data.workers.langsmith_sync import PULL_COLUMNS, QUALITY_KEY, THUMBS_KEY
from data.workflows.review_scores import scores_frame

# Lower edges of the peak-context buckets, in % of the input window; summarization starts at
# 75 % by default, so that edge is kept.
CONTEXT_EDGES = (0.0, 25.0, 50.0, 75.0, 90.0)
FREQ = {"day": "D", "hour": "h"}


def conversation_scores(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """The scores of the conversations that started in the filters' range, for their models,
    user and session (chosen in the database). A page computes it once per view and passes it
    to each chart's function as `scores`."""
    return scores_frame(
        engine=engine,
        start=filters.start,
        end=filters.end,
        by="conversation",
        models=filters.models,
        user=filters.user,
        session=filters.session,
    )


def _scores(engine: Engine, filters: Filters, scores: pd.DataFrame | None) -> pd.DataFrame:
    if scores is None:
        return conversation_scores(engine=engine, filters=filters)
    return scores.copy()


def _mean_by(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    grouped = frame.groupby(column, observed=True, sort=True)["score"]
    return pd.DataFrame(
        {"scores": grouped.size(), "mean_score": grouped.mean().astype(float)}
    ).reset_index()


def score_distribution_over_time(
    *, engine: Engine, filters: Filters, scores: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Scores per time bucket (filters.unit) of the conversation's start: bucket, score,
    count."""
    frame = _scores(engine, filters, scores)
    if frame.empty:
        return pd.DataFrame(columns=["bucket", "score", "count"])
    frame["bucket"] = pd.to_datetime(frame["started"], utc=True).dt.floor(FREQ[filters.unit])
    counts = frame.groupby(["bucket", "score"]).size().rename("count").reset_index()
    return counts.astype({"score": int, "count": int})


def score_distribution_by_model(
    *, engine: Engine, filters: Filters, scores: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Scores per model: model, score, count."""
    frame = _scores(engine, filters, scores)
    if frame.empty:
        return pd.DataFrame(columns=["model", "score", "count"])
    counts = frame.groupby(["model", "score"]).size().rename("count").reset_index()
    return counts.astype({"score": int, "count": int})


def context_bucket_labels() -> list[str]:
    edges = [*CONTEXT_EDGES, None]
    return [
        f"{low:g}–{high:g}%" if high is not None else f"{low:g}%+"
        for low, high in itertools.pairwise(edges)
    ]


def score_by_context_bucket(
    *, engine: Engine, filters: Filters, scores: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Mean score by the conversation's peak context % bucket (CONTEXT_EDGES, lower edge
    included; every bucket, mean NaN where nothing was scored): bucket, scores, mean_score.
    Conversations without a known window are left out."""
    frame = _scores(engine, filters, scores).dropna(subset=["peak_context_percent"])
    labels = context_bucket_labels()
    frame["bucket"] = pd.cut(
        frame["peak_context_percent"].astype(float),
        bins=[*CONTEXT_EDGES, float("inf")],
        labels=labels,
        right=False,
    )
    out = _mean_by(frame, "bucket").astype({"bucket": str}).set_index("bucket")
    # Every bucket, empty ones too: a chart that skips one hides that nothing was reviewed there.
    out = out.reindex(labels).fillna({"scores": 0}).astype({"scores": int})
    return out.rename_axis("bucket").reset_index()


def score_by_summarized(
    *, engine: Engine, filters: Filters, scores: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Mean score of summarized and not summarized conversations: summarized, scores,
    mean_score."""
    frame = _scores(engine, filters, scores).dropna(subset=["summarized"])
    return _mean_by(frame.astype({"summarized": bool}), "summarized")


def score_by_cost_bucket(
    *,
    engine: Engine,
    filters: Filters,
    buckets: int = 4,
    scores: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Mean score by conversation cost: the scored conversations are cut into `buckets`
    equal-count cost ranges (each conversation counted once, however many scores it has;
    ranges that would repeat an edge are merged): bucket, low_usd, high_usd, scores,
    mean_score."""
    columns = ["bucket", "low_usd", "high_usd", "scores", "mean_score"]
    frame = _scores(engine, filters, scores).dropna(subset=["cost_usd"])
    if frame.empty:
        return pd.DataFrame(columns=columns)
    costs = frame.drop_duplicates("session_id").set_index("session_id")["cost_usd"].astype(float)
    cut = pd.qcut(costs, q=buckets, duplicates="drop")
    if cut.isna().all():  # every conversation cost the same
        cut = pd.Series(pd.Interval(costs.min(), costs.max(), closed="both"), index=costs.index)
    frame["interval"] = frame["session_id"].map(cut)
    out = _mean_by(frame, "interval")
    out["low_usd"] = [max(i.left, costs.min()) for i in out["interval"]]
    out["high_usd"] = [i.right for i in out["interval"]]
    out["bucket"] = [
        f"${low:.4f}–${high:.4f}" for low, high in zip(out["low_usd"], out["high_usd"], strict=True)
    ]
    return out[columns]


def _thumbs_conditions(filters: Filters) -> Any:
    """Thumbs on the answers given in the filters' range, by the filters' models (the model of
    the turn's last successful chat call, stored with the thumbs), user and session: every
    condition is on the thumbs row, so a range is one index range (migration 0012)."""
    t = FeedbackThumbs.__table__.c
    parts = [t.answered_at >= filters.start, t.answered_at < filters.end]
    if filters.user:
        parts.append(t.user_id == filters.user)
    if filters.session:
        parts.append(t.session_id == filters.session)
    if filters.models:
        parts.append(t.chat_model.in_(filters.models))
    return and_(*parts)


def _thumbs(engine: Engine, filters: Filters, limit: int | None = None) -> pd.DataFrame:
    """Thumbs on the answers given in the filters' range (and model of that turn, user,
    session): answered_at, score, comment, run_id, feedback_uuid, updated_at. With `limit`,
    the `limit` most recently given or changed, chosen in the database."""
    t = FeedbackThumbs.__table__.c
    query = (
        select(
            t.answered_at,
            t.score,
            t.comment,
            t.run_id,
            t.feedback_uuid,
            t.updated_at,
        )
        .select_from(FeedbackThumbs.__table__)
        .where(_thumbs_conditions(filters))
    )
    if limit is not None:
        query = query.order_by(t.updated_at.desc(), t.id.desc()).limit(limit)
    columns = ["answered_at", "score", "comment", "run_id", "feedback_uuid", "updated_at"]
    with engine.connect() as connection:
        frame = pd.DataFrame([tuple(r) for r in connection.execute(query)], columns=columns)
    for name in ("answered_at", "updated_at"):
        frame[name] = pd.to_datetime(frame[name], utc=True)
    return frame


def thumbs_rate_over_time(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Customers' thumbs per time bucket (filters.unit) of the answer: bucket, up, down,
    up_rate (0-1). Counted in the database: one row per bucket comes back, not one per
    thumbs."""
    t = FeedbackThumbs.__table__.c
    period = bucket(t.answered_at, dialect=engine.dialect.name, unit=filters.unit)
    query = (
        select(
            period.label("bucket"),
            cast(func.sum(t.score), BigInteger),
            cast(func.count(), BigInteger),
        )
        .select_from(FeedbackThumbs.__table__)
        .where(_thumbs_conditions(filters))
        .group_by(period)
        .order_by(period)
    )
    with engine.connect() as connection:
        rows = [tuple(r) for r in connection.execute(query)]
    if not rows:
        return pd.DataFrame(columns=["bucket", "up", "down", "up_rate"])
    out = pd.DataFrame(rows, columns=["bucket", "up", "n"])
    out["bucket"] = pd.to_datetime(out["bucket"], utc=True)
    out["up"] = out["up"].astype(int)
    out["down"] = out["n"].astype(int) - out["up"]
    out["up_rate"] = out["up"] / out["n"]
    return out[["bucket", "up", "down", "up_rate"]]


def local_feedback(
    *,
    engine: Engine,
    filters: Filters,
    scores: pd.DataFrame | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """This app's thumbs and scores in the shape of data.workers.langsmith_sync.pull_feedback
    (source "local"), so a page can show both lists as one. With `limit`, the `limit` newest of them
    (by when they were given or last changed): at ten million calls a range holds about a
    hundred thousand thumbs, which no page should load to show a screenful."""
    return _local_rows(_thumbs(engine, filters, limit), _scores(engine, filters, scores), limit)


def _local_rows(thumbs: pd.DataFrame, scored: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    if limit is not None:
        scored = scored.sort_values("created_at", ascending=False).head(limit)
    parts = [
        pd.DataFrame(
            {
                "feedback_id": frame["feedback_uuid"].to_numpy(dtype=object),
                "run_id": frame["run_id"].to_numpy(dtype=object),
                "key": key,
                "score": frame["score"].to_numpy(),
                "value": None,
                "comment": frame["comment"].to_numpy(dtype=object),
                "created_at": frame[when].to_numpy(),
            }
        )
        for frame, key, when in (
            (thumbs, THUMBS_KEY, "updated_at"),
            (scored, QUALITY_KEY, "created_at"),
        )
        if not frame.empty
    ]
    frame = (
        pd.concat(parts, ignore_index=True) if parts else pd.DataFrame([], columns=PULL_COLUMNS[:7])
    )
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    frame["source_type"] = "app"
    frame["source"] = "local"
    if limit is not None:
        frame = frame.sort_values("created_at", ascending=False, kind="stable").head(limit)
    return frame[PULL_COLUMNS].reset_index(drop=True)


@dataclass(frozen=True, slots=True)
class FeedbackPageData:
    scores: pd.DataFrame  # conversation_scores: the scores of the range's conversations
    over_time: pd.DataFrame
    by_model: pd.DataFrame
    context: pd.DataFrame
    summarized: pd.DataFrame
    cost: pd.DataFrame
    thumbs: pd.DataFrame  # thumbs_rate_over_time
    given: pd.DataFrame  # data.workflows.review_scores.scores_frame: the scores given in the range
    agreement: AgreementReport  # between the reviewers, over `given`
    local: pd.DataFrame  # local_feedback, the `local_limit` newest


def page_data(*, engine: Engine, filters: Filters, local_limit: int) -> FeedbackPageData:
    """Everything the feedback page shows, after one refresh: its four reads (the range's
    conversations' scores, the thumbs rate, the scores given in the range and the newest
    thumbs) run at once (data.analytics.parallel_reads); the charts and the reviewers' agreement are
    computed from them."""
    with fresh_view(engine):
        scores, thumbs, given, newest = gather(
            lambda: conversation_scores(engine=engine, filters=filters),
            lambda: thumbs_rate_over_time(engine=engine, filters=filters),
            lambda: scores_frame(engine=engine, start=filters.start, end=filters.end),
            lambda: _thumbs(engine, filters, local_limit),
        )
        view = {"engine": engine, "filters": filters, "scores": scores}
        return FeedbackPageData(
            scores=scores,
            over_time=score_distribution_over_time(**view),
            by_model=score_distribution_by_model(**view),
            context=score_by_context_bucket(**view),
            summarized=score_by_summarized(**view),
            cost=score_by_cost_bucket(**view),
            thumbs=thumbs,
            given=given,
            agreement=agreement(given),
            local=_local_rows(newest, _scores(engine, filters, scores), local_limit),
        )
