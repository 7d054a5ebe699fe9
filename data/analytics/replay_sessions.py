"""Recorded sessions as the summarization replay reads them (agent/replay.py replays them).

A session is its successful chat calls in order, each with the request's input tokens, the
cached part, the answer's output tokens and its turn, and the recorded summarizations between
them. A summarization's size comes from what was recorded: the summarizer's own call (input =
the folded messages, output = the summary) and, where the agent recorded one, the
`summarization` event (tokens before and after the fold)."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from sqlalchemy import Engine, and_, func, select

from data.analytics.filters import Filters
from data.store.orm import AgentEvent, ModelCall

MAX_SESSIONS = 20_000


@dataclass(frozen=True, slots=True)
class Fold:
    """A recorded summarization before a chat call."""

    tokens_before: int | None  # the event's request tokens before the fold
    tokens_after: int | None  # ... and after it
    folded_tokens: int | None  # the summarizer call's input tokens
    summary_tokens: int | None  # the summarizer call's output tokens
    cost_usd: float
    # Events since the window work count the agent's fixed request overhead (system prompt and
    # recall reserve) in tokens_before/after and name the window; earlier ones count messages.
    counts_overhead: bool = False
    window: int | None = None

    @property
    def removed(self) -> int:
        """Tokens the fold took out of the request (events first, else the summarizer call)."""
        if self.tokens_before is not None and self.tokens_after is not None:
            return max(self.tokens_before - self.tokens_after, 0)
        if self.folded_tokens is not None and self.summary_tokens is not None:
            return max(self.folded_tokens - self.summary_tokens, 0)
        return 0


@dataclass(frozen=True, slots=True)
class Call:
    turn: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    cost_usd: float
    window: int | None
    fold_before: Fold | None = None


@dataclass(slots=True)
class Trace:
    """One recorded session."""

    session_id: str
    user_id: str
    model: str
    provider: str
    calls: list[Call] = field(default_factory=list)

    @property
    def window(self) -> int | None:
        return next((c.window for c in reversed(self.calls) if c.window), None)

    @property
    def folds(self) -> int:
        return sum(c.fold_before is not None for c in self.calls)


def session_ids(
    *, engine: Engine, filters: Filters, sample: int | None = None, seed: int = 0
) -> list[str]:
    """Sessions with a successful chat call that matches the filters; with `sample`, a
    reproducible random sample of that many (the same seed gives the same sessions)."""
    c = ModelCall.__table__.c
    query = (
        select(c.session_id)
        .where(filters.conditions(), c.purpose == "chat", c.status == "ok")
        .group_by(c.session_id)
        .order_by(c.session_id)
        .limit(MAX_SESSIONS)
    )
    with engine.connect() as connection:
        found = list(connection.execute(query).scalars())
    if sample is not None and sample < len(found):
        found = sorted(random.Random(seed).sample(found, sample))
    return found


def load_traces(*, engine: Engine, sessions: Sequence[str], chunk: int = 500) -> list[Trace]:
    """The recorded chat calls and summarizations of these sessions, in call order."""
    c = ModelCall.__table__.c
    e = AgentEvent.__table__.c
    traces: dict[str, Trace] = {}
    with engine.connect() as connection:
        for i in range(0, len(sessions), chunk):
            part = list(sessions[i : i + chunk])
            events: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
            for session_id, turn, before, after, detail in connection.execute(
                select(e.session_id, e.turn, e.tokens_before, e.tokens_after, e.detail)
                .where(e.session_id.in_(part), e.kind == "summarization", e.status == "ok")
                .order_by(e.session_id, e.ts, e.id)
            ):
                facts = _detail(detail)
                window = facts.get("window")
                events.setdefault((session_id, turn), []).append(
                    (
                        before,
                        after,
                        "trigger_tokens" in facts,
                        window if isinstance(window, int) else None,
                    )
                )
            rows = connection.execute(
                select(
                    c.session_id,
                    c.user_id,
                    c.purpose,
                    c.provider,
                    c.model,
                    c.turn,
                    c.input_tokens,
                    c.cached_input_tokens,
                    c.output_tokens,
                    func.coalesce(c.cost_usd, 0.0),
                    c.context_window,
                )
                .where(
                    c.session_id.in_(part),
                    c.status == "ok",
                    c.purpose.in_(("chat", "summarize")),
                    and_(c.input_tokens > 0),
                )
                .order_by(c.session_id, c.ts, c.id)
            )
            pending: dict[str, Fold] = {}
            for sid, user, purpose, provider, model, turn, tin, cached, out, cost, window in rows:
                trace = traces.get(sid)
                if purpose == "summarize":
                    queued = events.get((sid, turn))
                    before, after, counts, ev_window = (
                        queued.pop(0) if queued else (None, None, False, None)
                    )
                    pending[sid] = Fold(
                        before, after, int(tin), int(out), float(cost), counts, ev_window
                    )
                    continue
                if trace is None:
                    trace = traces[sid] = Trace(sid, user, model, provider)
                trace.calls.append(
                    Call(
                        turn=int(turn),
                        input_tokens=int(tin),
                        cached_tokens=int(cached),
                        output_tokens=int(out),
                        cost_usd=float(cost),
                        window=window,
                        fold_before=pending.pop(sid, None),
                    )
                )
    return [traces[s] for s in sessions if s in traces]


def _detail(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def summary_ratio(traces: Sequence[Trace]) -> float | None:
    """Recorded summary size per folded token: the median over every recorded summarization
    of the summarizer's output over its input. None when nothing was ever summarized."""
    ratios = [
        c.fold_before.summary_tokens / c.fold_before.folded_tokens
        for t in traces
        for c in t.calls
        if c.fold_before is not None
        and c.fold_before.folded_tokens
        and c.fold_before.summary_tokens is not None
    ]
    return median(ratios) if ratios else None


def event_ratio(traces: Sequence[Trace]) -> float | None:
    """The median of the recorded summarization events' tokens after ÷ tokens before."""
    ratios = [
        c.fold_before.tokens_after / c.fold_before.tokens_before
        for t in traces
        for c in t.calls
        if c.fold_before is not None
        and c.fold_before.tokens_before
        and c.fold_before.tokens_after is not None
    ]
    return median(ratios) if ratios else None
