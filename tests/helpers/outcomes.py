"""Conversations that end, and judges that answer at once: for the outcome tests and the
two-process lease drill (`python -m tests.helpers.outcomes URL SECONDS` runs one worker's
passes with an instant judge until nothing is left, then prints what it judged as JSON)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

import krippendorff
import numpy as np
from sqlalchemy import Engine, select, update

from data.analytics.outcome_agreement import kappa_of_table
from data.store import conversations
from data.store.db import make_engine
from data.store.orm import ChatSession, Message, utcnow
from data.workers.outcome_judge import OutcomeWorker
from data.workflows.outcomes import Conversation, Verdict


def converse(
    engine: Engine,
    session_id: str,
    exchanges: Sequence[tuple[str, str]],
    *,
    user_id: str = "alice",
    at: datetime | None = None,
) -> None:
    """Store (customer, agent) exchanges as chat turns; with `at`, the messages and the
    session's last activity are moved to that time (a conversation that happened then)."""
    for said, answered in exchanges:
        turn = conversations.start_turn(
            engine=engine, session_id=session_id, user_id=user_id, text=said
        )
        conversations.add_assistant_message(
            engine=engine, session_id=session_id, turn=turn, text=answered, run_id=None
        )
    if at is not None:
        with engine.begin() as connection:
            connection.execute(
                update(Message).where(Message.session_id == session_id).values(created_at=at)
            )
            connection.execute(
                update(ChatSession).where(ChatSession.id == session_id).values(updated_at=at)
            )


def last_activity(engine: Engine, session_id: str) -> datetime:
    with engine.connect() as connection:
        return connection.execute(
            select(ChatSession.updated_at).where(ChatSession.id == session_id)
        ).scalar_one()


def verdict(outcome: str = "resolved", topic: str = "order status", **changes: object) -> Verdict:
    fields: dict[str, object] = {
        "outcome": outcome,
        "topic": topic,
        "confidence": 0.9,
        "reason": f"scripted {outcome}",
        "quote": None,
        "decided_by": "judge",
        "judge_model": "scripted",
        "rubric_version": "outcome-v1",
    }
    fields.update(changes)
    return Verdict(**fields)  # type: ignore[arg-type]


class ScriptedJudge:
    """Answers `outcome` for every conversation (or `by_session[id]`) at once, and counts."""

    def __init__(
        self,
        outcome: str = "resolved",
        by_session: dict[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.outcome = outcome
        self.by_session = by_session or {}
        self.delay_s = delay_s
        self.seen: list[Conversation] = []

    def __call__(self, talk: Conversation) -> Verdict:
        time.sleep(self.delay_s)
        self.seen.append(talk)
        return verdict(self.by_session.get(talk.session_id, self.outcome))


def later(minutes: float) -> datetime:
    return utcnow() + timedelta(minutes=minutes)


def _drill(url: str, seconds: float) -> None:
    engine = make_engine(url)
    judge = ScriptedJudge(delay_s=0.02)  # long enough for the two workers' passes to overlap
    worker = OutcomeWorker(engine, judge, idle_minutes=1, batch=5)
    deadline = time.monotonic() + seconds
    idle_passes = 0
    while time.monotonic() < deadline and idle_passes < 3:
        report = worker.run_once()
        idle_passes = idle_passes + 1 if not (report.judged or report.unjudged) else 0
    print(json.dumps({"judged": sorted(t.session_id for t in judge.seen)}))


if __name__ == "__main__":
    _drill(sys.argv[1], float(sys.argv[2]))


def chat_call(
    engine: Engine,
    session_id: str,
    *,
    model: str = "gpt-4o-mini",
    cost: float = 0.01,
    context: int = 1000,
    purpose: str = "chat",
    user_id: str = "alice",
) -> None:
    """One recorded model call of a conversation (window 10,000 tokens, so `context` / 100 is
    its context %)."""
    from data.store.recorder import record_calls
    from data.store.records import CallRecord

    record_calls(
        engine=engine,
        calls=[
            CallRecord(
                user_id=user_id,
                session_id=session_id,
                turn=1,
                purpose=purpose,
                provider="openai",
                model=model,
                input_tokens=context,
                cached_input_tokens=0,
                output_tokens=50,
                cost_usd=cost,
                cost_status="computed",
                latency_ms=500.0,
                ttft_ms=200.0,
                context_tokens=context,
                context_window=10_000,
            )
        ],
    )


def label(engine: Engine, session_id: str, reviewer: str, outcome: str, topic: str) -> None:
    """A reviewer's score of the conversation with their outcome and topic, through the queue."""
    from data.workflows import review

    review.enqueue(engine=engine, session_ids=[session_id], reviews_required=5, created_by="lead")
    claim = review.claim_next(engine=engine, reviewer=reviewer)
    assert claim is not None and claim.session_id == session_id
    review.save_score(
        engine=engine,
        token=claim.token,
        reviewer=reviewer,
        score=3,
        outcome=outcome,
        topic=topic,
        sync_enabled=False,
    )


# The judge's agreement computed from raw label lists, independently of the page's counts ----


def label_table(a: list[str], b: list[str]) -> np.ndarray:
    """Two raters' labels of the same items as a contingency table (sorted labels)."""
    labels = sorted(set(a) | set(b))
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b, strict=True):
        table[index[x], index[y]] += 1
    return table


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    return kappa_of_table(label_table(a, b)) if a and len(a) == len(b) else None


def nominal_alpha(a: list[str], b: list[str]) -> float | None:
    """Nominal Krippendorff's α of the raw labels, by the `krippendorff` package."""
    if len(a) < 2:
        return None
    labels = sorted(set(a) | set(b))
    index = {label: i for i, label in enumerate(labels)}
    data = np.array([[index[x] for x in a], [index[y] for y in b]], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        try:
            value = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
        except ValueError:  # one label only: undefined
            return None
    return None if np.isnan(value) else value
