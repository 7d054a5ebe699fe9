"""The review queue: which conversations to review, claims so that two reviewers never score
the same item at once, N independent 1-5 scores per item, and reviewers' progress."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

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

from data.store.feedback import clean_comment, dialect_insert, initial_sync_state
from data.store.orm import ChatSession, Message, ModelCall, utcnow
from data.store.orm_outcomes import OUTCOMES
from data.store.orm_team import ReviewClaim, ReviewItem, ReviewScore

SCORE_MIN, SCORE_MAX = 1, 5
RUBRIC: list[tuple[int, str]] = [
    (1, "Wrong or harmful: misleads the customer, breaks policy, or leaks data."),
    (2, "Unhelpful: misses the question, or a human has to undo it."),
    (3, "Partly right: useful but incomplete or vague; the customer must ask again."),
    (4, "Good: correct and helpful, with small gaps in tone or detail."),
    (5, "Resolved: accurate, complete and kind; the customer needs nothing more."),
]
MAX_NAME_CHARS = 128
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


def send_back(*, engine: Engine, session_id: str, created_by: str) -> str:
    """Ask for one more review of a conversation (the Outcomes page's disagreements): queued
    with one review if it is not in the queue, otherwise its item wants one review more than it
    has (at most 5) and is open to anyone again. Says what was done."""
    lead = _name(created_by, "lead")
    with write_transaction(engine) as connection:
        item = connection.execute(
            select(Q.id, Q.reviews_required).where(Q.session_id == session_id)
        ).first()
        if item is not None:
            done = connection.execute(select(func.count()).where(S.item_id == item.id)).scalar_one()
            wanted = min(int(done) + 1, 5)
            connection.execute(
                update(ReviewItem)
                .where(Q.id == item.id)
                .values(reviews_required=max(wanted, item.reviews_required), assigned_to=None)
            )
            return f"{session_id} wants {max(wanted, item.reviews_required)} reviews now."
    enqueue(engine=engine, session_ids=[session_id], reviews_required=1, created_by=lead)
    return f"{session_id} is in the review queue."


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
    outcome: str | None = None,
    topic: str | None = None,
    topics: Sequence[str] = (),
) -> int:
    """Store a reviewer's score (with their own outcome and topic of the conversation, which
    calibrate the judge) under their live claim and end the claim, in one transaction; the
    score's id. A topic must be one of `topics` (the taxonomy) when they are given. The score
    carries the run id of the conversation's latest traced answer, which is what LangSmith
    attaches it to (no run id: it stays "local").

    Raises ReviewInputError, writing nothing, for a score outside 1-5, an unknown outcome or
    topic, a comment over MAX_COMMENT_CHARS, and an unknown, ended, expired or someone else's
    claim."""
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise ReviewInputError(f"A score is a whole number from {SCORE_MIN} to {SCORE_MAX}.")
    if outcome is not None and outcome not in OUTCOMES:
        raise ReviewInputError(f"An outcome is one of {', '.join(OUTCOMES)}.")
    if topic is not None and topics and topic not in topics:
        raise ReviewInputError("Pick a topic from the list.")
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
                outcome=outcome,
                topic=topic,
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
