"""The Outcomes page's figures: how ended conversations ended (the current verdict of each,
chosen by when it ended and filtered by chat model and user like every analyst page), rates by
day, model, topic and rubric version, cost per resolved conversation, outcome against context
and summarizations, and the paged table of ended conversations.

Definitions (the page's help repeats them):
- ended: conversations with a current verdict, unjudged ones apart (counted on their own);
- automated resolution rate: resolved ÷ ended; escalation and abandonment likewise;
- reopen rate: resolved verdicts (current or not) marked reopened ÷ resolved verdicts;
- involvement: ended conversations in which the agent answered at least once ÷ ended;
- cost per resolved conversation: the agent's cost of every ended conversation ÷ resolved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pandas as pd
from sqlalchemy import ColumnElement, Engine, Float, Table, and_, case, func, literal, select, true
from sqlalchemy import cast as sql_cast

from data.analytics.filters import Filters
from data.store.orm_outcomes import OUTCOMES, ConversationOutcome

O = cast(Table, ConversationOutcome.__table__)  # noqa: E741 (the outcomes table, as in SQL)
DIMENSIONS = {
    "day": "Day",
    "chat_model": "Model",
    "topic": "Topic",
    "rubric_version": "Rubric version",
    "judge_model": "Judge",
}
CONTEXT_BANDS = ((0, 25, "0–25 %"), (25, 50, "25–50 %"), (50, 75, "50–75 %"), (75, None, "75 % +"))
TABLE_COLUMNS = (
    "ended_at",
    "session_id",
    "user_id",
    "outcome",
    "topic",
    "confidence",
    "reason",
    "quote",
    "decided_by",
    "judge_model",
    "rubric_version",
    "chat_model",
    "cost_usd",
    "peak_context_percent",
    "summarizations",
    "turns",
    "end_reason",
    "reopened",
)
MAX_EXPORT = 100_000


def where(filters: Filters, *, current: bool = True) -> ColumnElement[bool]:
    """Verdicts of conversations that ended in the range, by chat model and user (a session
    filter picks one conversation)."""
    c = O.c
    parts = [c.ended_at >= filters.start, c.ended_at < filters.end]
    if current:
        parts.append(c.current)
    if filters.models:
        parts.append(c.chat_model.in_(filters.models))
    if filters.user:
        parts.append(c.user_id == filters.user)
    if filters.session:
        parts.append(c.session_id == filters.session)
    return and_(true(), *parts)


def _count(condition: ColumnElement[bool]) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _counts() -> list[Any]:
    c = O.c
    judged = c.outcome != "unjudged"
    return [
        _count(judged).label("ended"),
        *[_count(c.outcome == name).label(name) for name in OUTCOMES],
        _count(c.outcome == "unjudged").label("unjudged"),
        _count(and_(judged, c.chat_model.is_not(None))).label("involved"),
        func.coalesce(func.sum(case((judged, c.cost_usd), else_=0.0)), 0.0).label("cost_usd"),
    ]


def _rates(frame: pd.DataFrame) -> pd.DataFrame:
    ended = frame["ended"].where(frame["ended"] > 0)
    for name in OUTCOMES:
        frame[f"{name}_rate"] = 100 * frame[name] / ended
    frame["involvement_rate"] = 100 * frame["involved"] / ended
    frame["cost_per_resolved"] = frame["cost_usd"] / frame["resolved"].where(frame["resolved"] > 0)
    return frame


@dataclass(frozen=True, slots=True)
class Summary:
    ended: int
    counts: dict[str, int]  # per outcome, and "unjudged"
    involved: int
    cost_usd: float
    resolved_verdicts: int  # every resolved verdict in the range, current or not
    reopened: int

    def rate(self, outcome: str) -> float | None:
        return 100 * self.counts[outcome] / self.ended if self.ended else None

    @property
    def reopen_rate(self) -> float | None:
        return 100 * self.reopened / self.resolved_verdicts if self.resolved_verdicts else None

    @property
    def involvement_rate(self) -> float | None:
        return 100 * self.involved / self.ended if self.ended else None

    @property
    def cost_per_resolved(self) -> float | None:
        resolved = self.counts["resolved"]
        return self.cost_usd / resolved if resolved else None


def summary(*, engine: Engine, filters: Filters) -> Summary:
    c = O.c
    resolved = c.outcome == "resolved"
    with engine.connect() as connection:
        row = connection.execute(select(*_counts()).where(where(filters))).one()
        reopen = connection.execute(
            select(_count(resolved), _count(and_(resolved, c.reopened))).where(
                where(filters, current=False)
            )
        ).one()
    counts = {name: int(row._mapping[name]) for name in (*OUTCOMES, "unjudged")}
    return Summary(
        ended=int(row.ended),
        counts=counts,
        involved=int(row.involved),
        cost_usd=float(row.cost_usd),
        resolved_verdicts=int(reopen[0]),
        reopened=int(reopen[1]),
    )


def by(*, engine: Engine, filters: Filters, dimension: str) -> pd.DataFrame:
    """Counts and rates per day (UTC), chat model, topic, rubric version or judge."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}")
    c = O.c
    if dimension == "day":
        key: Any = (
            func.date_trunc("day", c.ended_at)
            if engine.dialect.name == "postgresql"
            else func.strftime("%Y-%m-%d", c.ended_at)
        )
    else:
        key = func.coalesce(c[dimension], literal("(none)"))
    query = select(key.label(dimension), *_counts()).where(where(filters)).group_by(key)
    with engine.connect() as connection:
        frame = pd.DataFrame([tuple(r) for r in connection.execute(query)])
    columns = [dimension, "ended", *OUTCOMES, "unjudged", "involved", "cost_usd"]
    frame = frame if not frame.empty else pd.DataFrame(columns=columns)
    frame.columns = columns
    if dimension == "day":
        frame["day"] = pd.to_datetime(frame["day"], utc=True)
    frame = frame.sort_values(dimension).reset_index(drop=True)
    for name in columns[1:]:
        frame[name] = pd.to_numeric(frame[name])
    return _rates(frame)


def by_context(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Outcomes by how full the window got (peak context %, in bands) and by whether the
    conversation was summarized: does folding hurt resolution?"""
    c = O.c
    band = case(
        *[
            (and_(c.peak_context_percent >= low, c.peak_context_percent < high), literal(label))
            if high is not None
            else (c.peak_context_percent >= low, literal(label))
            for low, high, label in CONTEXT_BANDS
        ],
        else_=literal("no chat call"),
    )
    folds = case(
        (c.summarizations == 0, literal("not summarized")),
        (c.summarizations == 1, literal("summarized once")),
        else_=literal("summarized 2+ times"),
    )
    frames = []
    with engine.connect() as connection:
        for kind, key in (("peak context", band), ("summarizations", folds)):
            rows = connection.execute(
                select(key, *_counts()).where(where(filters)).group_by(key)
            ).all()
            frame = pd.DataFrame(
                [tuple(r) for r in rows],
                columns=["group", "ended", *OUTCOMES, "unjudged", "involved", "cost_usd"],
            )
            frame.insert(0, "by", kind)
            frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    order = [label for *_, label in CONTEXT_BANDS] + [
        "no chat call",
        "not summarized",
        "summarized once",
        "summarized 2+ times",
    ]
    out["_order"] = out["group"].map({g: i for i, g in enumerate(order)})
    out = out.sort_values(["by", "_order"]).drop(columns="_order").reset_index(drop=True)
    return _rates(out)


def ended_conversations(
    *,
    engine: Engine,
    filters: Filters,
    outcome: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[pd.DataFrame, int]:
    """One page of ended conversations (newest end first) and how many match; `outcome`
    narrows them to one outcome (or "unjudged")."""
    c = O.c
    condition = where(filters)
    if outcome:
        condition = and_(condition, c.outcome == outcome)
    with engine.connect() as connection:
        total = int(connection.execute(select(func.count()).where(condition)).scalar() or 0)
        rows = connection.execute(
            select(*[c[name] for name in TABLE_COLUMNS])
            .where(condition)
            .order_by(c.ended_at.desc(), c.id.desc())
            .offset(max(offset, 0))
            .limit(max(min(limit, MAX_EXPORT), 0))
        ).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=list(TABLE_COLUMNS))
    frame["ended_at"] = pd.to_datetime(frame["ended_at"], utc=True)
    return frame, total


def resolved_cost(*, engine: Engine, filters: Filters) -> tuple[float, int]:
    """For the Cost page: the agent's cost of the conversations that ended in the range and
    how many of them were resolved (cost per resolved conversation = the first ÷ the second)."""
    s = summary(engine=engine, filters=filters)
    return s.cost_usd, s.counts["resolved"]


def mean_confidence(*, engine: Engine, filters: Filters) -> float | None:
    with engine.connect() as connection:
        value = connection.execute(
            select(func.avg(sql_cast(O.c.confidence, Float))).where(
                where(filters), O.c.decided_by == "judge"
            )
        ).scalar()
    return None if value is None else float(value)
