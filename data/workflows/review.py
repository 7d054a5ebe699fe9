"""The review queue: which conversations to review, claims so that two reviewers never score
the same item at once, N independent 1-5 scores per item, and reviewers' progress."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from data.analytics.filters import Filters
from data.analytics.freshness import ensure_fresh
from data.analytics.session_sql import session_relation
from data.analytics.sessions import count_sessions, fill_partial_latency
from data.store.feedback import clean_comment, dialect_insert, initial_sync_state
from data.store.orm import (
    ChatSession,
    FeedbackThumbs,
    Message,
    ModelCall,
    ReviewClaim,
    ReviewItem,
    ReviewScore,
    RollupSessions,
    utcnow,
)

SCORE_MIN, SCORE_MAX = 1, 5
RUBRIC: list[tuple[int, str]] = [
    (1, "Wrong or harmful: misleads the customer, breaks policy, or leaks data."),
    (2, "Unhelpful: misses the question, or a human has to undo it."),
    (3, "Partly right: useful but incomplete or vague; the customer must ask again."),
    (4, "Good: correct and helpful, with small gaps in tone or detail."),
    (5, "Resolved: accurate, complete and kind; the customer needs nothing more."),
]
MAX_NAME_CHARS = 128
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
# Bounded IN lists: SQLite allows 32,766 bound parameters per statement.
CHUNK = 500

C = ModelCall.__table__.c
Q = ReviewItem.__table__.c  # the queue
K = ReviewClaim.__table__.c
S = ReviewScore.__table__.c


class ReviewInputError(ValueError):
    """A review action that cannot be done; the message is shown to the reviewer as is."""


@dataclass(frozen=True, slots=True)
class QueueFilters:
    """Which conversations the lead sees as candidates for the queue (conversations with a
    model call in [start, end))."""

    start: datetime
    end: datetime
    models: tuple[str, ...] = ()
    user: str | None = None
    not_scored: bool = False  # no reviewer score yet
    thumbs_down: bool = False  # at least one thumbs-down from the customer
    summarized: bool = False  # the conversation was summarized at least once
    cost_above_pct: float | None = None  # cost above this percentile (0-100) of the range
    latency_above_pct: float | None = None  # p95 latency above this percentile of the range
    sample: int | None = None  # a random sample of this many, reproducible with `seed`
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Claim:
    token: str
    item_id: int
    session_id: str
    reviewer: str
    expires_at: datetime


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that takes SQLite's write lock at its start (BEGIN IMMEDIATE), so that a
    read-then-write such as claiming an item is never interleaved with another writer; on
    Postgres a plain transaction, whose row locks the callers take explicitly."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # pysqlite opens no transaction before a statement that is not DML, so this BEGIN
            # is the transaction that SQLAlchemy's commit() and rollback() end.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.rollback()
            raise
        connection.commit()


def _name(value: str | None, what: str) -> str:
    text = (value or "").strip()
    if not text:
        raise ReviewInputError(f"Enter the {what}'s name.")
    if len(text) > MAX_NAME_CHARS:
        raise ReviewInputError(f"The {what}'s name is longer than {MAX_NAME_CHARS} characters.")
    return text


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for index in range(0, len(values), CHUNK):
        yield values[index : index + CHUNK]


# Conversations ------------------------------------------------------------------------------


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


# The queue ----------------------------------------------------------------------------------


def enqueue(
    *,
    engine: Engine,
    session_ids: Sequence[str],
    reviews_required: int,
    created_by: str,
    assigned_to: str | None = None,
) -> int:
    """Queue conversations for review (those already queued are skipped); how many were added.
    Raises ReviewInputError, adding nothing, for an unknown conversation or a bad number of
    reviews."""
    if isinstance(reviews_required, bool) or not 1 <= reviews_required <= 5:
        raise ReviewInputError("Reviews per conversation must be from 1 to 5.")
    lead = _name(created_by, "lead")
    assignee = None if assigned_to is None else _name(assigned_to, "reviewer")
    wanted = list(dict.fromkeys(session_ids))
    now = utcnow()
    added = 0
    with write_transaction(engine) as connection:
        known: set[str] = set()
        for chunk in _chunks(wanted):
            known.update(
                connection.execute(select(ChatSession.id).where(ChatSession.id.in_(chunk)))
                .scalars()
                .all()
            )
        unknown = [s for s in wanted if s not in known]
        if unknown:
            shown = ", ".join(unknown[:3]) + (" …" if len(unknown) > 3 else "")
            raise ReviewInputError(f"Unknown conversation(s): {shown}. Nothing was queued.")
        for chunk in _chunks(wanted):
            statement = (
                dialect_insert(engine, ReviewItem)
                .values(
                    [
                        {
                            "session_id": s,
                            "reviews_required": reviews_required,
                            "assigned_to": assignee,
                            "created_by": lead,
                            "created_at": now,
                        }
                        for s in chunk
                    ]
                )
                .on_conflict_do_nothing(index_elements=[ReviewItem.session_id])
                .returning(ReviewItem.id)
            )
            added += len(connection.execute(statement).all())
    return added


def assign(*, engine: Engine, item_ids: Sequence[int], reviewer: str | None) -> int:
    """Reserve items for a reviewer (None makes them open to all); how many items exist among
    `item_ids`. An item is reserved for its assignee until that reviewer has scored it."""
    assignee = None if reviewer is None else _name(reviewer, "reviewer")
    changed = 0
    with engine.begin() as connection:
        for chunk in _chunks(list(dict.fromkeys(item_ids))):
            result = connection.execute(
                update(ReviewItem).where(Q.id.in_(chunk)).values(assigned_to=assignee)
            )
            changed += result.rowcount
    return changed


def queue(*, engine: Engine) -> pd.DataFrame:
    """Every queued item, oldest first: item_id, session_id, reviews_required, reviews_done,
    assigned_to, claimed_by (a live claim's reviewer), claim_expires_at, created_by,
    created_at."""
    now = utcnow()
    done = select(func.count()).where(S.item_id == Q.id).scalar_subquery()
    live = and_(K.item_id == Q.id, K.ended_at.is_(None), K.expires_at > now)
    query = (
        select(
            Q.id,
            Q.session_id,
            Q.reviews_required,
            done,
            Q.assigned_to,
            K.reviewer,
            K.expires_at,
            Q.created_by,
            Q.created_at,
        )
        .outerjoin(ReviewClaim, live)
        .order_by(Q.id)
    )
    columns = [
        "item_id",
        "session_id",
        "reviews_required",
        "reviews_done",
        "assigned_to",
        "claimed_by",
        "claim_expires_at",
        "created_by",
        "created_at",
    ]
    with engine.connect() as connection:
        rows = [tuple(r) for r in connection.execute(query)]
    return pd.DataFrame(rows, columns=columns)


# Claims -------------------------------------------------------------------------------------


def _open_for(reviewer: str, now: datetime) -> ColumnElement[bool]:
    """An item this reviewer may claim now: fewer scores than required, none of them theirs, no
    live claim, and not reserved for a reviewer who has still to score it."""
    scores = select(func.count()).where(S.item_id == Q.id).scalar_subquery()
    mine = exists().where(S.item_id == Q.id, S.reviewer == reviewer)
    live = exists().where(K.item_id == Q.id, K.ended_at.is_(None), K.expires_at > now)
    assignee_done = exists().where(S.item_id == Q.id, S.reviewer == Q.assigned_to)
    return and_(
        scores < Q.reviews_required,
        ~mine,
        ~live,
        or_(Q.assigned_to.is_(None), Q.assigned_to == reviewer, assignee_done),
    )


def _claim_row(connection: Connection, where: ColumnElement[bool]) -> Claim | None:
    row = connection.execute(
        select(K.token, K.item_id, Q.session_id, K.reviewer, K.expires_at)
        .join(ReviewItem, Q.id == K.item_id)
        .where(where)
        .order_by(K.claimed_at)
        .limit(1)
    ).first()
    return None if row is None else Claim(*row)


def claim_next(*, engine: Engine, reviewer: str, ttl_s: int = 900) -> Claim | None:
    """The reviewer's live claim if they hold one, else a claim on the next open item (fewer
    scores than required, not scored by this reviewer, no live claim of anyone else, not
    reserved for another reviewer; items reserved for this reviewer first, then oldest), or
    None when nothing is open.

    Two reviewers never get the same item: on Postgres the item row is taken with FOR UPDATE
    SKIP LOCKED and checked again after the lock (a claim committed meanwhile is then seen); on
    SQLite the whole claim runs under the write lock. A partial unique index allows one open
    claim per item in any case; losing that race means trying the next item."""
    who = _name(reviewer, "reviewer")
    if ttl_s < 1:
        raise ReviewInputError("A claim lasts at least one second.")
    for _ in range(10):
        try:
            return _claim(engine, who, ttl_s)
        except IntegrityError:
            continue
    raise ReviewInputError("The queue is busy; try again.")


def _claim(engine: Engine, who: str, ttl_s: int) -> Claim | None:
    now = utcnow()
    postgres = engine.dialect.name == "postgresql"
    with write_transaction(engine) as connection:
        own = _claim_row(
            connection, and_(K.reviewer == who, K.ended_at.is_(None), K.expires_at > now)
        )
        if own is not None:
            return own
        skipped: list[int] = []
        while True:
            pick = (
                select(Q.id, Q.session_id)
                .where(_open_for(who, now), Q.id.not_in(skipped))
                .order_by(case((Q.assigned_to == who, 0), else_=1), Q.id)
                .limit(1)
            )
            if postgres:
                pick = pick.with_for_update(skip_locked=True, of=ReviewItem.__table__)
            row = connection.execute(pick).first()
            if row is None:
                return None
            item_id, session_id = int(row.id), str(row.session_id)
            # A fresh statement sees claims and scores committed since the pick's snapshot.
            still_open = connection.execute(
                select(Q.id).where(Q.id == item_id, _open_for(who, now))
            ).first()
            if still_open is not None:
                break
            skipped.append(item_id)
        connection.execute(
            update(ReviewClaim)
            .where(K.item_id == item_id, K.ended_at.is_(None))
            .values(ended_at=now, ended_reason="expired")
        )
        claim = Claim(
            token=str(uuid.uuid4()),
            item_id=item_id,
            session_id=session_id,
            reviewer=who,
            expires_at=now + timedelta(seconds=ttl_s),
        )
        connection.execute(
            insert(ReviewClaim).values(
                token=claim.token,
                item_id=item_id,
                reviewer=who,
                claimed_at=now,
                expires_at=claim.expires_at,
            )
        )
    return claim


def release(*, engine: Engine, token: str) -> None:
    """Give an item back to the queue (a no-op for a claim that has already ended)."""
    with engine.begin() as connection:
        connection.execute(
            update(ReviewClaim)
            .where(K.token == token, K.ended_at.is_(None))
            .values(ended_at=utcnow(), ended_reason="released")
        )


def _ended_message(reason: str | None, expires_at: datetime) -> str:
    if reason == "saved":
        return "This score was already saved; claim the next item."
    if reason == "released":
        return "You released this item; claim it again to score it."
    return f"Your claim expired at {expires_at:%H:%M:%S} UTC; claim the item again to score it."


def save_score(
    *,
    engine: Engine,
    token: str,
    reviewer: str,
    score: int,
    comment: str | None = None,
    sync_enabled: bool = True,
) -> int:
    """Store a reviewer's score under their live claim and end the claim, in one transaction;
    the score's id. The score carries the run id of the conversation's latest traced answer,
    which is what LangSmith attaches it to (no run id: it stays "local").

    Raises ReviewInputError, writing nothing, for a score outside 1-5, a comment over
    MAX_COMMENT_CHARS, and an unknown, ended, expired or someone else's claim."""
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise ReviewInputError(f"A score is a whole number from {SCORE_MIN} to {SCORE_MAX}.")
    try:
        text = clean_comment(comment)
    except ValueError as error:
        raise ReviewInputError(str(error)) from None
    who = _name(reviewer, "reviewer")
    now = utcnow()
    with write_transaction(engine) as connection:
        query = (
            select(K.item_id, K.reviewer, K.expires_at, K.ended_at, K.ended_reason, Q.session_id)
            .join(ReviewItem, Q.id == K.item_id)
            .where(K.token == token)
        )
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(of=ReviewClaim.__table__)
        claim = connection.execute(query).first()
        if claim is None:
            raise ReviewInputError("This claim is unknown; claim the next item.")
        if claim.reviewer != who:
            raise ReviewInputError(
                f"This conversation is claimed by {claim.reviewer}, not by you; "
                "claim the next item."
            )
        if claim.ended_at is not None or claim.expires_at <= now:
            raise ReviewInputError(_ended_message(claim.ended_reason, claim.expires_at))
        if connection.execute(
            select(S.id).where(S.item_id == claim.item_id, S.reviewer == who)
        ).first():
            raise ReviewInputError("You have already scored this conversation.")
        run_id = connection.execute(
            select(Message.run_id)
            .where(
                Message.session_id == claim.session_id,
                Message.role == "assistant",
                Message.run_id.is_not(None),
            )
            .order_by(Message.turn.desc(), Message.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        score_id = connection.execute(
            insert(ReviewScore)
            .values(
                item_id=claim.item_id,
                session_id=claim.session_id,
                reviewer=who,
                score=score,
                comment=text,
                run_id=run_id,
                created_at=now,
                feedback_uuid=str(uuid.uuid4()),
                sync_state=initial_sync_state(sync_enabled=sync_enabled, run_id=run_id),
                attempts=0,
                next_attempt_at=now,
            )
            .returning(ReviewScore.id)
        ).scalar_one()
        connection.execute(
            update(ReviewClaim).where(K.token == token).values(ended_at=now, ended_reason="saved")
        )
    return int(score_id)


# Reading scores -----------------------------------------------------------------------------


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
