"""When a conversation ends and how its verdict is kept: closing on purpose, finding the
conversations that ended (idle for CONVERSATION_IDLE_MINUTES, or closed), leasing them to one
judge worker at a time, the rules that decide before any judge, and writing each verdict with
the conversation's figures. The judge itself is passed in (agent/judge.py builds the model
one); data/ never imports the agent."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from data.analytics.measures import PERCENT, C
from data.config.topics import Topic, guess_topic
from data.integrations.metrics import observe_outcome
from data.store.orm import ChatSession, Message, utcnow
from data.store.orm_outcomes import RULES_VERSION, ConversationOutcome, OutcomeJob
from data.store.orm_support import SupportTicket

S = cast(Table, ChatSession.__table__)
M = cast(Table, Message.__table__)
J = cast(Table, OutcomeJob.__table__)
O = cast(Table, ConversationOutcome.__table__)  # noqa: E741 (the outcomes table, as in SQL)
T = cast(Table, SupportTicket.__table__)

LEASE_S = 300.0  # a worker owns a leased end this long; if it dies, another takes it after
MAX_ATTEMPTS = 3  # leases of one end before it is stored unjudged (the worker kept dying)
DETECT_BATCH = 5_000  # ends enqueued per pass at most (the next pass takes the rest)
# A customer asking for a person: escalated whatever else happened.
ASKS_FOR_PERSON = re.compile(
    r"\b(talk|speak|chat)\s+(to|with)\s+(a|an|some|your)?\s*"
    r"(human|person|real person|agent|representative|manager|someone)\b"
    r"|\b(human|live)\s+(agent|support|person)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Conversation:
    """What a judge reads: one ended conversation, its messages in order (role, text)."""

    session_id: str
    user_id: str
    messages: tuple[tuple[str, str], ...]
    last_turn: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's (or the rules') answer. `outcome` is one of OUTCOMES or "unjudged" (then
    `error` says why and topic, confidence and reason are empty)."""

    outcome: str
    topic: str | None
    confidence: float | None
    reason: str
    quote: str | None
    decided_by: str  # "rules" | "judge" | "none"
    judge_model: str | None
    rubric_version: str
    attempts: int = 1
    error: str | None = None
    quote_found: bool = False


Judge = Callable[[Conversation], Verdict]


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    session_id: str
    user_id: str
    last_message_at: datetime
    end_reason: str
    attempts: int
    token: str


@dataclass
class PassReport:
    """What one pass of the judge worker did."""

    enqueued: int = 0
    reopened: int = 0
    judged: int = 0
    by_rules: int = 0
    unjudged: int = 0
    skipped: int = 0
    lost: int = 0  # leases another worker took over before this one finished
    outcomes: dict[str, int] = field(default_factory=dict)


def sampled(session_id: str, rate: float) -> bool:
    """Whether JUDGE_SAMPLE_RATE picks this conversation: the same answer for the same id on
    every worker and every pass (a hash of the id, not a random draw)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(session_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


# Closing ---------------------------------------------------------------------------------------


def close_session(*, engine: Engine, session_id: str, user_id: str) -> datetime | None:
    """End a conversation on purpose; the time it was closed, or None when the session does not
    exist for this user. The judge worker takes it on its next pass. Closing again moves the
    time; a later message reopens the conversation."""
    now = utcnow()
    with engine.begin() as connection:
        changed = connection.execute(
            update(S).where(S.c.id == session_id, S.c.user_id == user_id).values(closed_at=now)
        ).rowcount
    return now if changed else None


# Finding ends ----------------------------------------------------------------------------------


def _insert(connection: Connection) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(J)


def detect_ends(
    connection: Connection, *, now: datetime, idle_minutes: int, backfill_days: int
) -> int:
    """Enqueue every conversation that has ended and whose end has no job yet: silent for
    `idle_minutes` since its last message, or closed after it. One statement; an end is one
    job however many workers run this at once (a unique key on session and last message).
    Ends older than `backfill_days` are left alone (0: no limit), so turning outcomes on over
    a long history does not judge all of it. Demo sessions carry planted outcomes."""
    idle_before = now - timedelta(minutes=idle_minutes)
    closed = and_(S.c.closed_at.is_not(None), S.c.closed_at >= S.c.updated_at)
    has_job = exists().where(J.c.session_id == S.c.id, J.c.last_message_at == S.c.updated_at)
    where = [~S.c.demo, or_(S.c.updated_at <= idle_before, closed), ~has_job]
    if backfill_days:
        where.append(S.c.updated_at >= now - timedelta(days=backfill_days))
    ends = (
        select(
            S.c.id,
            S.c.user_id,
            S.c.updated_at,
            case((closed, literal("closed")), else_=literal("idle")),
            literal("pending"),
            literal(0),
            literal(now, J.c.created_at.type),
        )
        .where(*where)
        .limit(DETECT_BATCH)
    )
    columns = [
        "session_id",
        "user_id",
        "last_message_at",
        "end_reason",
        "state",
        "attempts",
        "created_at",
    ]
    statement = (
        _insert(connection).from_select(columns, ends).on_conflict_do_nothing().returning(J.c.id)
    )
    return len(connection.execute(statement).all())


def mark_reopened(connection: Connection, *, now: datetime, window_hours: int) -> int:
    """Mark reopened each current `resolved` verdict whose customer wrote again within
    `window_hours` of its end. Only verdicts that could still be reopened are read (ended
    within the window, or since the worker last ran, plus a day)."""
    window = timedelta(hours=window_hours)
    candidates = connection.execute(
        select(O.c.id, O.c.session_id, O.c.ended_at)
        .select_from(O.join(S, S.c.id == O.c.session_id))
        .where(
            O.c.current,
            O.c.outcome == "resolved",
            ~O.c.reopened,
            O.c.ended_at >= now - window - timedelta(days=1),
            S.c.updated_at > O.c.ended_at,
        )
    ).all()
    marked = 0
    for verdict_id, session_id, ended_at in candidates:
        back = connection.execute(
            select(func.min(M.c.created_at)).where(
                M.c.session_id == session_id, M.c.role == "user", M.c.created_at > ended_at
            )
        ).scalar()
        if back is not None and _aware(back) - _aware(ended_at) <= window:
            connection.execute(update(O).where(O.c.id == verdict_id).values(reopened=True))
            marked += 1
    return marked


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# Leasing ---------------------------------------------------------------------------------------


def lease(engine: Engine, *, now: datetime, limit: int) -> list[Job]:
    """Take up to `limit` pending ends for LEASE_S: one atomic update, so two workers never
    hold the same end (the second one's update finds the lease taken and skips the row)."""
    token = str(uuid.uuid4())
    free = and_(J.c.state == "pending", or_(J.c.lease_until.is_(None), J.c.lease_until < now))
    ids = select(J.c.id).where(free).order_by(J.c.id).limit(limit).scalar_subquery()
    with engine.begin() as connection:
        rows = connection.execute(
            update(J)
            .where(J.c.id.in_(ids), free)
            .values(
                lease_until=now + timedelta(seconds=LEASE_S),
                lease_token=token,
                attempts=J.c.attempts + 1,
            )
            .returning(
                J.c.id,
                J.c.session_id,
                J.c.user_id,
                J.c.last_message_at,
                J.c.end_reason,
                J.c.attempts,
            )
        ).all()
    return [
        Job(
            id=int(r[0]),
            session_id=str(r[1]),
            user_id=str(r[2]),
            last_message_at=r[3],
            end_reason=str(r[4]),
            attempts=int(r[5]),
            token=token,
        )
        for r in sorted(rows, key=lambda r: r[0])
    ]


def conversation(connection: Connection, job: Job) -> Conversation:
    """The messages of the conversation up to its end, in order."""
    rows = connection.execute(
        select(M.c.role, M.c.content, M.c.turn)
        .where(M.c.session_id == job.session_id)
        .order_by(M.c.turn, M.c.id)
    ).all()
    return Conversation(
        session_id=job.session_id,
        user_id=job.user_id,
        messages=tuple((str(r[0]), str(r[1])) for r in rows),
        last_turn=max((int(r[2]) for r in rows), default=0),
    )


# Rules -----------------------------------------------------------------------------------------


def rules_verdict(
    connection: Connection, job: Job, talk: Conversation, topics: tuple[Topic, ...]
) -> Verdict | None:
    """Facts before any judge: a ticket or hand-over the agent opened, or a customer asking
    for a person, means `escalated`. The topic then comes from the taxonomy's hint words in
    the ticket and the customer's messages."""
    ticket = connection.execute(
        select(T.c.id, T.c.kind, T.c.subject)
        .where(T.c.session_id == job.session_id)
        .order_by(T.c.id)
        .limit(1)
    ).first()
    if ticket is None:
        for role, text in talk.messages:
            if role == "user" and ASKS_FOR_PERSON.search(text):
                return Verdict(
                    outcome="escalated",
                    topic=guess_topic(text, topics),
                    confidence=1.0,
                    reason="The customer asked for a person.",
                    quote=" ".join(text.split())[:160],
                    quote_found=True,
                    decided_by="rules",
                    judge_model=None,
                    rubric_version=RULES_VERSION,
                )
        return None
    words = " ".join(
        [str(ticket.subject), *(text for role, text in talk.messages if role == "user")]
    )
    kind = "hand-over" if ticket.kind == "escalation" else "ticket"
    return Verdict(
        outcome="escalated",
        topic=guess_topic(words, topics),
        confidence=1.0,
        reason=f"The agent opened {kind} #{ticket.id}: {str(ticket.subject)[:160]}",
        quote=None,
        decided_by="rules",
        judge_model=None,
        rubric_version=RULES_VERSION,
    )


# Writing ---------------------------------------------------------------------------------------


def figures(connection: Connection, session_id: str) -> dict[str, Any]:
    """The conversation's figures when it was judged, from its own calls (judge calls left out):
    the chat model that answered most, cost, peak context %, summarizations and turns."""
    agent_calls = and_(C.session_id == session_id, C.purpose != "judge")
    chat_ok = and_(C.purpose == "chat", C.status == "ok")
    totals = connection.execute(
        select(
            func.coalesce(func.sum(C.cost_usd), 0.0),
            func.max(case((chat_ok, PERCENT))),
            func.coalesce(func.sum(case((C.purpose == "summarize", 1), else_=0)), 0),
            func.coalesce(func.max(C.turn), 0),
        ).where(agent_calls)
    ).one()
    model = connection.execute(
        select(C.model)
        .where(agent_calls, C.purpose == "chat")
        .group_by(C.model)
        .order_by(func.count().desc(), C.model)
        .limit(1)
    ).scalar()
    return {
        "chat_model": model,
        "cost_usd": float(totals[0] or 0.0),
        "peak_context_percent": None if totals[1] is None else float(totals[1]),
        "summarizations": int(totals[2] or 0),
        "turns": int(totals[3] or 0),
    }


def save_verdict(engine: Engine, job: Job, verdict: Verdict, *, now: datetime) -> bool:
    """Store the verdict as the conversation's current one and finish the job, in one
    transaction, only while this worker still holds the lease; False when it did not (the
    lease ran out and another worker took the end: its verdict counts, this one is dropped)."""
    with engine.begin() as connection:
        mine = connection.execute(
            update(J)
            .where(J.c.id == job.id, J.c.lease_token == job.token, J.c.state == "pending")
            .values(state="done", finished_at=now, lease_until=None)
        ).rowcount
        if not mine:
            return False
        ended_at = connection.execute(
            select(func.max(M.c.created_at)).where(M.c.session_id == job.session_id)
        ).scalar()
        connection.execute(
            update(O).where(O.c.session_id == job.session_id, O.c.current).values(current=False)
        )
        connection.execute(
            insert(O).values(
                session_id=job.session_id,
                user_id=job.user_id,
                ended_at=ended_at or job.last_message_at,
                end_reason=job.end_reason,
                judged_at=now,
                outcome=verdict.outcome,
                topic=verdict.topic,
                confidence=verdict.confidence,
                reason=verdict.reason,
                quote=verdict.quote,
                quote_found=verdict.quote_found,
                decided_by=verdict.decided_by,
                judge_model=verdict.judge_model,
                rubric_version=verdict.rubric_version,
                attempts=verdict.attempts,
                error=verdict.error,
                reopened=False,
                current=True,
                demo=False,
                **figures(connection, job.session_id),
            )
        )
    observe_outcome(verdict.outcome, verdict.topic)
    return True


def skip(engine: Engine, job: Job, *, now: datetime, detail: str) -> bool:
    """Finish a job without a verdict (not in JUDGE_SAMPLE_RATE's sample)."""
    with engine.begin() as connection:
        return bool(
            connection.execute(
                update(J)
                .where(J.c.id == job.id, J.c.lease_token == job.token, J.c.state == "pending")
                .values(state="skipped", finished_at=now, lease_until=None, detail=detail)
            ).rowcount
        )


def verdict_history(*, engine: Engine, session_id: str) -> list[dict[str, Any]]:
    """Every verdict of a conversation, newest first (the first is the one that counts)."""
    columns = [
        O.c.outcome,
        O.c.topic,
        O.c.confidence,
        O.c.reason,
        O.c.quote,
        O.c.decided_by,
        O.c.judge_model,
        O.c.rubric_version,
        O.c.ended_at,
        O.c.end_reason,
        O.c.judged_at,
        O.c.reopened,
        O.c.current,
        O.c.error,
    ]
    with engine.connect() as connection:
        rows = connection.execute(
            select(*columns).where(O.c.session_id == session_id).order_by(O.c.id.desc())
        ).all()
    return [dict(row._mapping) for row in rows]


def pending_ends(*, engine: Engine) -> int:
    """Ended conversations waiting for a verdict (the Status page's backlog)."""
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).where(J.c.state == "pending")).scalar() or 0
        )


@dataclass(frozen=True, slots=True)
class JudgeStatus:
    """The Status page's view of the outcome worker: its backlog and its last day."""

    pending: int
    oldest_pending: datetime | None
    last_verdict_at: datetime | None
    day_verdicts: int
    day_unjudged: int
    last_error: str | None


def judge_status(*, engine: Engine, now: datetime | None = None) -> JudgeStatus:
    since = (now or utcnow()) - timedelta(days=1)
    pending = J.c.state == "pending"
    with engine.connect() as connection:
        waiting = connection.execute(select(func.count(), func.min(J.c.created_at)).where(pending))
        count, oldest = waiting.one()
        day = connection.execute(
            select(func.count(), func.sum(case((O.c.outcome == "unjudged", 1), else_=0))).where(
                O.c.judged_at >= since
            )
        ).one()
        last = connection.execute(select(func.max(O.c.judged_at))).scalar()
        error = connection.execute(
            select(O.c.error)
            .where(O.c.outcome == "unjudged", O.c.judged_at >= since)
            .order_by(O.c.id.desc())
            .limit(1)
        ).scalar()
    return JudgeStatus(
        pending=int(count or 0),
        oldest_pending=oldest,
        last_verdict_at=last,
        day_verdicts=int(day[0] or 0),
        day_unjudged=int(day[1] or 0),
        last_error=error,
    )
