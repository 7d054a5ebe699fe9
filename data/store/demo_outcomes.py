"""The demo history's conversation outcomes: a verdict for every ended demo conversation, with
the conversation's own figures; an earlier verdict, mostly reopened, for a few of them; and
reviewer labels (score, outcome, topic) on about a tenth. Drawn from their own random stream,
so the sessions, messages and calls stay the same with and without them."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, delete, insert, or_, select

from data.config.settings import Settings
from data.config.topics import topic_names
from data.store.orm import ChatSession
from data.store.orm_outcomes import OUTCOMES, RULES_VERSION, ConversationOutcome, OutcomeJob
from data.store.orm_team import ReviewClaim, ReviewItem, ReviewScore

# A demo conversation has ended when it has been silent this long at the demo's end, as the
# end detector decides for live ones.
IDLE = timedelta(minutes=int(Settings.model_fields["conversation_idle_minutes"].default))
UNJUDGED_RATE = 0.02
# Shares of the judged verdicts, over all ended demo conversations; topic, model, context and
# summarizations move a conversation's odds, then the odds are rescaled to these shares.
TARGET = {"resolved": 0.60, "escalated": 0.20, "abandoned": 0.10, "unresolved": 0.08}
# How much likelier than average each topic ends escalated, abandoned, unresolved.
TOPIC_ODDS = {
    "order status": (0.5, 0.9, 0.6),
    "returns and refunds": (1.0, 1.0, 0.9),
    "damaged item": (2.6, 0.7, 1.0),
    "payment": (2.2, 0.8, 1.4),
    "account": (1.1, 1.7, 1.5),
    "shipping address": (0.7, 1.1, 0.8),
    "other": (1.0, 1.3, 2.2),
}
MODEL_ODDS = {"gpt-4o": 0.65, "gpt-4.1-mini": 0.9}  # any other chat model: 1.15
# What each demo question (data/store/demo.py's ASKS, by its first words) is about.
SUBJECTS = (
    ("Where is my order", "order status"),
    ("I want to return", "returns and refunds"),
    ("My card was charged", "payment"),
    ("Can I change the delivery address", "shipping address"),
    ("The package for", "damaged item"),
    ("How long does a refund take", "returns and refunds"),
    ("Do you ship to Canada", "shipping address"),
    ("I never received the confirmation", "account"),
    ("Can I cancel order", "order status"),
    ("Is there a warranty", "other"),
)
TICKET_ASKS = ("My card was charged", "The package for")  # the agent opens a ticket for these
RUBRICS = ("outcome-v0", "outcome-v1")
OLD_RUBRIC_SHARE = 0.3  # the oldest verdicts were judged with the previous rubric
CLOSED_SHARE = 0.15  # ended with "End conversation" rather than by going silent
HISTORY_SHARE = 0.04  # conversations closed earlier, judged, then resumed
# How often the judge's verdict is right (the reviewers' view of the truth), by rubric: the
# calibration shows the old rubric below JUDGE_MIN_AGREEMENT's default κ, the new one above.
ACCURACY = {"outcome-v0": 0.7, "outcome-v1": 0.9}
TOPIC_ACCURACY = 0.9
# How often a reviewer sees the true outcome and topic: with ACCURACY, reviewers agree with
# the judge about three times in four.
REVIEWER_ACCURACY, REVIEWER_TOPIC_ACCURACY = 0.9, 0.85
REVIEW_SHARE, MIN_REVIEWED = 0.10, 30
REVIEWERS = ("ana", "ben", "chloe")
REVIEWER_WEIGHTS = (0.45, 0.35, 0.2)
LEAD = "ana"
# What a wrong verdict (or label) says instead of each outcome.
CONFUSED = {
    "resolved": ("unresolved", "abandoned"),
    "escalated": ("unresolved", "resolved"),
    "abandoned": ("unresolved", "resolved"),
    "unresolved": ("abandoned", "resolved", "escalated"),
}
REASONS = {
    "resolved": (
        "The agent answered the question about {topic} and the customer asked nothing more.",
        "The customer got a complete answer about {topic}.",
        "The agent settled the {topic} question and the customer did not come back.",
    ),
    "escalated": (
        "The agent handed the {topic} problem over to a person.",
        "The {topic} problem needed a person, and the agent passed it on.",
    ),
    "abandoned": (
        "The customer stopped replying while the agent still needed details.",
        "The customer left before the {topic} problem was settled.",
    ),
    "unresolved": (
        "The agent could not help with the {topic} problem.",
        "The customer's {topic} problem was still open at the end.",
    ),
}
JUDGE_ERRORS = (
    "call failed: APITimeoutError: Request timed out.; call failed: APITimeoutError: Request "
    "timed out.",
    "unusable answer: the answer is not JSON; unusable answer: outcome 'solved' is not one of "
    "resolved, escalated, abandoned, unresolved",
    "call failed: RateLimitError: Error code: 429 - rate limit reached for requests; unusable "
    "answer: the answer is not JSON",
)
SCORES = {  # a reviewer's 1-5 score, by the outcome they saw
    "resolved": ((3, 4, 5), (0.15, 0.45, 0.4)),
    "escalated": ((2, 3, 4), (0.25, 0.5, 0.25)),
    "abandoned": ((1, 2, 3), (0.3, 0.45, 0.25)),
    "unresolved": ((1, 2, 3), (0.45, 0.4, 0.15)),
}
COMMENTS = {
    "resolved": ("Clear and complete.", "Good answer, a bit long."),
    "escalated": ("Right to hand this over.", "Could have solved it without a ticket."),
    "abandoned": ("Asked for details the customer had already given.", "Customer gave up."),
    "unresolved": ("Did not answer the actual question.", "Went in circles."),
}


class DemoRows(Protocol):
    """One generated conversation (data/store/demo.py's DemoSession)."""

    session: dict[str, Any]
    messages: list[dict[str, Any]]
    calls: list[dict[str, Any]]


@dataclass
class Planted:
    """The rows to write: verdicts (each conversation's earlier ones first, so ids grow with
    time), review items and scores (their item ids filled in when written), and when the
    conversations that were closed on purpose were closed last."""

    verdicts: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    closed: dict[str, datetime] = field(default_factory=dict)


@dataclass
class _Ended:
    rows: DemoRows
    subject: str
    ticket: str | None  # the question the agent opened a ticket for
    figures: dict[str, Any]


def subject(text: str) -> str:
    """The topic of a demo question ("other" for anything else)."""
    return next((topic for start, topic in SUBJECTS if text.startswith(start)), "other")


def figures(calls: Sequence[dict[str, Any]], *, up_to_turn: int | None = None) -> dict[str, Any]:
    """A conversation's figures as data/workflows/outcomes.py's figures() reads them from its
    calls (judge calls left out): the chat model that answered most, cost, peak context %,
    summarizations and turns."""
    mine = [
        c
        for c in calls
        if c["purpose"] != "judge" and (up_to_turn is None or c["turn"] <= up_to_turn)
    ]
    chat = [c for c in mine if c["purpose"] == "chat"]
    by_model: dict[str, int] = {}
    for c in chat:
        by_model[c["model"]] = by_model.get(c["model"], 0) + 1
    peaks = [
        100.0 * c["context_tokens"] / c["context_window"]
        for c in chat
        if c["status"] == "ok" and c["context_window"]
    ]
    return {
        "chat_model": min(by_model, key=lambda m: (-by_model[m], m)) if by_model else None,
        "cost_usd": float(sum(c["cost_usd"] or 0.0 for c in mine)),
        "peak_context_percent": max(peaks) if peaks else None,
        "summarizations": sum(c["purpose"] == "summarize" for c in mine),
        "turns": max((c["turn"] for c in mine), default=0),
    }


def _odds(ended: _Ended) -> list[float]:
    """Unscaled odds of resolved, escalated, abandoned, unresolved: a long context and a
    folded (summarized) one make every bad end likelier, escalation less so."""
    f = ended.figures
    model = MODEL_ODDS.get(f["chat_model"], 1.15)
    strain = 1 + 1.6 * max(0.0, (f["peak_context_percent"] or 0.0) - 25) / 75
    strain *= 1.6 if f["summarizations"] else 1.0
    escalated, abandoned, unresolved = TOPIC_ODDS.get(ended.subject, (1.0, 1.0, 1.0))
    return [
        1.0,
        escalated * model * (1 + (strain - 1) / 2),
        abandoned * model * strain,
        unresolved * model * strain,
    ]


def _probabilities(ended: Sequence[_Ended]) -> list[list[float]]:
    """Each conversation's outcome probabilities, rescaled (a few rounds of raking) so that
    their means over all conversations are TARGET's shares."""
    odds = [_odds(e) for e in ended]
    wanted = [TARGET[o] / sum(TARGET.values()) for o in OUTCOMES]
    scale = [1.0] * len(OUTCOMES)
    for _ in range(30):
        probs = [_normed([w * s for w, s in zip(row, scale, strict=True)]) for row in odds]
        for k in range(len(OUTCOMES)):
            mean = sum(p[k] for p in probs) / len(probs)
            scale[k] *= wanted[k] / mean
    return [_normed([w * s for w, s in zip(row, scale, strict=True)]) for row in odds]


def _normed(values: list[float]) -> list[float]:
    total = sum(values)
    return [v / total for v in values]


def _quote(rng: random.Random, messages: Sequence[dict[str, Any]], role: str, last: bool) -> str:
    """A few words copied from one of the conversation's messages of `role` (the last one, or
    any), word for word as the judge quotes."""
    own = [m for m in messages if m["role"] == role] or list(messages)
    words = (own[-1] if last else rng.choice(own))["content"].split()
    size = min(len(words), rng.randint(4, 8))
    start = rng.randrange(len(words) - size + 1)
    return " ".join(words[start : start + size])


def _verdict(
    rng: random.Random,
    ended: _Ended,
    outcome: str,
    judge_model: str,
    rubric: str,
    *,
    messages: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The verdict columns of one judged conversation (the judge's, or the rules' for a
    ticket); `messages` are those up to the end judged, when it is not the last one."""
    topic = ended.subject
    if rng.random() > TOPIC_ACCURACY:  # the judge filed it under another topic
        topic = rng.choice([t for t in topic_names() if t != ended.subject])
    if outcome == "escalated" and ended.ticket is not None and rng.random() < 0.55:
        return dict(
            outcome=outcome,
            topic=ended.subject,
            confidence=1.0,
            reason=f"The agent opened a ticket: {ended.ticket[:160]}",
            quote=None,
            quote_found=False,
            decided_by="rules",
            judge_model=None,
            rubric_version=RULES_VERSION,
            attempts=1,
            error=None,
        )
    role, last = {
        "resolved": ("assistant", True),
        "escalated": ("user", False),
        "abandoned": ("user", True),
        "unresolved": ("assistant", True),
    }[outcome]
    low = 0.7 if outcome == "resolved" else 0.5
    return dict(
        outcome=outcome,
        topic=topic,
        confidence=round(rng.uniform(low, 0.99), 3),
        reason=rng.choice(REASONS[outcome]).format(topic=topic),
        quote=_quote(rng, ended.rows.messages if messages is None else messages, role, last),
        quote_found=True,
        decided_by="judge",
        judge_model=judge_model,
        rubric_version=rubric,
        attempts=2 if rng.random() < 0.03 else 1,
        error=None,
    )


def _unjudged(rng: random.Random, judge_model: str, rubric: str) -> dict[str, Any]:
    return dict(
        outcome="unjudged",
        topic=None,
        confidence=None,
        reason="",
        quote=None,
        quote_found=False,
        decided_by="none",
        judge_model=judge_model,
        rubric_version=rubric,
        attempts=2,
        error=rng.choice(JUDGE_ERRORS),
    )


def plant(*, sessions: Sequence[DemoRows], end: datetime, seed: int, judge_model: str) -> Planted:
    """The outcome rows of the demo conversations that have ended by `end` (silent for IDLE):
    one current verdict each, an earlier reopened one for a few, reviewer labels for about a
    tenth (at least MIN_REVIEWED when there are that many)."""
    rng = random.Random(f"{seed}-outcomes")
    ended: list[_Ended] = []
    for rows in sessions:
        if not rows.messages or rows.session["updated_at"] > end - IDLE:
            continue
        asks = [m["content"] for m in rows.messages if m["role"] == "user"]
        ticket = next((a for a in asks if a.startswith(TICKET_ASKS)), None)
        ended.append(_Ended(rows, subject(asks[0]), ticket, figures(rows.calls)))
    planted = Planted()
    if not ended:
        return planted
    probs = _probabilities(ended)
    last_at = [max(m["created_at"] for m in e.rows.messages) for e in ended]
    cutover = sorted(last_at)[int(len(ended) * OLD_RUBRIC_SHARE)]
    eligible = [i for i, e in enumerate(ended) if e.figures["turns"] >= 3]
    resumed = set(
        rng.sample(eligible, min(len(eligible), max(3, round(HISTORY_SHARE * len(ended)))))
    )
    current: list[dict[str, Any]] = []
    for i, e in enumerate(ended):
        session = e.rows.session
        rubric = RUBRICS[0] if last_at[i] < cutover else RUBRICS[1]
        if i in resumed:
            earlier, planted.closed[session["id"]] = _earlier(rng, e, judge_model, rubric)
            planted.verdicts.append(earlier)
        if rng.random() < CLOSED_SHARE:
            closed_at = session["updated_at"] + timedelta(seconds=rng.uniform(5, 120))
            planted.closed[session["id"]] = closed_at
            end_reason, judged_at = "closed", closed_at + timedelta(seconds=rng.uniform(20, 60))
        else:
            end_reason = "idle"
            judged_at = session["updated_at"] + IDLE + timedelta(seconds=rng.uniform(10, 180))
        if rng.random() < UNJUDGED_RATE:
            verdict = _unjudged(rng, judge_model, rubric)
        else:
            outcome = rng.choices(OUTCOMES, weights=probs[i])[0]
            verdict = _verdict(rng, e, outcome, judge_model, rubric)
        current.append(
            dict(
                session_id=session["id"],
                user_id=session["user_id"],
                ended_at=last_at[i],
                end_reason=end_reason,
                judged_at=min(judged_at, end),
                reopened=False,
                current=True,
                demo=True,
                **verdict,
                **e.figures,
            )
        )
    planted.verdicts += current
    _label(rng, planted, [(e, v) for e, v in zip(ended, current, strict=True)], end)
    return planted


def _earlier(
    rng: random.Random, ended: _Ended, judge_model: str, rubric: str
) -> tuple[dict[str, Any], datetime]:
    """A verdict on an earlier end of the conversation, and when that end came: the customer
    closed it after some turn, it was judged (mostly resolved) before they wrote again, so a
    resolved one was then reopened."""
    turn = rng.randint(1, ended.figures["turns"] - 1)
    messages = [m for m in ended.rows.messages if m["turn"] <= turn]
    ended_at = max(m["created_at"] for m in messages)
    after = min(m["created_at"] for m in ended.rows.messages if m["turn"] > turn)
    closed_at = ended_at + (after - ended_at) * rng.uniform(0.2, 0.5)
    outcome = "resolved" if rng.random() < 0.8 else rng.choice(("abandoned", "unresolved"))
    session = ended.rows.session
    verdict = dict(
        session_id=session["id"],
        user_id=session["user_id"],
        ended_at=ended_at,
        end_reason="closed",
        judged_at=closed_at + (after - closed_at) * rng.uniform(0.3, 0.8),
        reopened=outcome == "resolved",
        current=False,
        demo=True,
        **_verdict(rng, ended, outcome, judge_model, rubric, messages=messages),
        **figures(ended.rows.calls, up_to_turn=turn),
    )
    return verdict, closed_at


def _label(
    rng: random.Random,
    planted: Planted,
    verdicts: list[tuple[_Ended, dict[str, Any]]],
    end: datetime,
) -> None:
    """Reviewer labels on a sample of the conversations the judge decided (the calibration
    leaves the rules' verdicts out): one or two reviewers each, who see the truth most of the
    time, where the judge is right ACCURACY of the time."""
    wanted = max(MIN_REVIEWED, round(REVIEW_SHARE * len(verdicts)))  # of the ended ones
    judged = [(e, v) for e, v in verdicts if v["decided_by"] == "judge"]
    wanted = min(len(judged), wanted)
    latest = end - timedelta(minutes=1)
    for index in sorted(rng.sample(range(len(judged)), wanted)):
        ended, verdict = judged[index]
        truth = verdict["outcome"]
        if rng.random() > ACCURACY[verdict["rubric_version"]]:
            truth = rng.choice(CONFUSED[truth])
        count = 2 if rng.random() < 0.4 else 1
        names: list[str] = []
        while len(names) < count:  # distinct reviewers, the busier ones more often
            name = rng.choices(REVIEWERS, weights=REVIEWER_WEIGHTS)[0]
            names += [] if name in names else [name]
        queued_at = max(
            verdict["judged_at"],
            min(verdict["judged_at"] + timedelta(hours=rng.uniform(1, 36)), latest),
        )
        required = 2 if len(names) == 1 and rng.random() < 0.15 else len(names)
        session_id = verdict["session_id"]
        planted.items.append(
            dict(
                session_id=session_id,
                reviews_required=required,
                assigned_to=None,
                created_by=LEAD,
                created_at=queued_at,
            )
        )
        for name in names:
            outcome = truth
            if rng.random() > REVIEWER_ACCURACY:
                outcome = rng.choice(CONFUSED[truth])
            topic = ended.subject
            if rng.random() > REVIEWER_TOPIC_ACCURACY:
                topic = rng.choice([t for t in topic_names() if t != ended.subject])
            values, weights = SCORES[outcome]
            scored_at = max(
                queued_at, min(queued_at + timedelta(minutes=rng.uniform(10, 1800)), latest)
            )
            planted.scores.append(
                dict(
                    session_id=session_id,
                    reviewer=name,
                    score=rng.choices(values, weights=weights)[0],
                    comment=rng.choice(COMMENTS[outcome]) if rng.random() < 0.3 else None,
                    run_id=None,
                    created_at=scored_at,
                    outcome=outcome,
                    topic=topic,
                    feedback_uuid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    sync_state="local",
                    attempts=0,
                    next_attempt_at=scored_at,
                    last_error=None,
                    synced_at=None,
                )
            )


def write(connection: Connection, planted: Planted) -> dict[str, int]:
    """Insert the planted rows (after their sessions); the counts written."""
    for table, rows in ((ConversationOutcome, planted.verdicts), (ReviewItem, planted.items)):
        for i in range(0, len(rows), 5000):
            connection.execute(insert(table), rows[i : i + 5000])
    wanted = [row["session_id"] for row in planted.items]
    item_of: dict[str, int] = {}
    for i in range(0, len(wanted), 500):
        item_of.update(
            (session_id, item_id)
            for item_id, session_id in connection.execute(
                select(ReviewItem.id, ReviewItem.session_id).where(
                    ReviewItem.session_id.in_(wanted[i : i + 500])
                )
            )
        )
    scores = [{**row, "item_id": item_of[row["session_id"]]} for row in planted.scores]
    for i in range(0, len(scores), 5000):
        connection.execute(insert(ReviewScore), scores[i : i + 5000])
    return {
        "outcomes": sum(row["current"] for row in planted.verdicts),
        "review labels": len(scores),
    }


def remove(connection: Connection) -> None:
    """Delete the verdicts, outcome jobs and review rows of demo conversations (before the
    conversations themselves)."""
    demo_sessions = select(ChatSession.id).where(ChatSession.demo.is_(True))
    items = select(ReviewItem.id).where(ReviewItem.session_id.in_(demo_sessions))
    connection.execute(delete(ReviewScore).where(ReviewScore.item_id.in_(items)))
    connection.execute(delete(ReviewClaim).where(ReviewClaim.item_id.in_(items)))
    connection.execute(delete(ReviewItem).where(ReviewItem.session_id.in_(demo_sessions)))
    connection.execute(
        delete(ConversationOutcome).where(
            or_(
                ConversationOutcome.demo.is_(True),
                ConversationOutcome.session_id.in_(demo_sessions),
            )
        )
    )
    connection.execute(delete(OutcomeJob).where(OutcomeJob.session_id.in_(demo_sessions)))
