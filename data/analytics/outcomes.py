"""The Outcomes page's figures: how ended conversations ended (the current verdict of each,
chosen by when it ended and filtered by chat model and user like every analyst page), rates by
day, model, topic and rubric version, cost per resolved conversation, outcome against context
and summarizations, and the paged table of ended conversations.

Definitions (the page's help repeats them):
- ended: conversations with a current verdict, unjudged ones apart (counted on their own);
- automated resolution rate: resolved ÷ ended; escalation and abandonment likewise;
- reopen rate: resolved verdicts (current or not) marked reopened ÷ resolved verdicts;
- involvement: ended conversations in which the agent answered at least once ÷ ended;
- cost per resolved conversation: the agent's cost of every ended conversation ÷ resolved.

The whole days of a range are read from rollup_outcomes (refreshed first: conversation_outcomes'
triggers queue the days whose verdicts changed), its partial first and last days from the
verdicts themselves; a user or session filter reads the verdicts only (they are few)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pandas as pd
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    String,
    Subquery,
    Table,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    union_all,
)

from data.analytics.filters import Filters
from data.analytics.rollups import _ranges
from data.store.db import writer
from data.store.orm_outcomes import (
    OUTCOMES,
    ConversationOutcome,
    RollupOutcome,
    RollupOutcomeDirty,
)

O = cast(Table, ConversationOutcome.__table__)  # noqa: E741 (the outcomes table, as in SQL)
R = cast(Table, RollupOutcome.__table__)
D = cast(Table, RollupOutcomeDirty.__table__)
REFRESH_LOCK = 0x61636265  # "acbe": one refresher of rollup_outcomes at a time (Postgres)
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


# The rollup ------------------------------------------------------------------------------------


def _day(dialect: str) -> Any:
    """A verdict's UTC day as YYYY-MM-DD (the rollup's key; the triggers compute the same)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", O.c.ended_at), "YYYY-MM-DD")
    return func.substr(O.c.ended_at, 1, 10)


def _band() -> Any:
    c = O.c
    return case(
        *[
            (and_(c.peak_context_percent >= low, c.peak_context_percent < high), literal(label))
            if high is not None
            else (c.peak_context_percent >= low, literal(label))
            for low, high, label in CONTEXT_BANDS
        ],
        else_=literal("no chat call"),
    )


def _folds() -> Any:
    c = O.c
    return case(
        (c.summarizations == 0, literal("not summarized")),
        (c.summarizations == 1, literal("summarized once")),
        else_=literal("summarized 2+ times"),
    )


# Each kind of breakdown and its key; `all` keeps every verdict, current or not.
KINDS = ("all", "topic", "rubric_version", "judge_model", "band", "folds")
ROLLUP_COLUMNS = [
    "kind",
    "day",
    "chat_model",
    "key",
    "outcome",
    "current",
    "reopened",
    "n",
    "cost_usd",
]


def _key(kind: str) -> Any:
    if kind == "all":
        return literal(None, String)
    if kind == "band":
        return _band()
    if kind == "folds":
        return _folds()
    return func.coalesce(O.c[kind], literal("(none)"))


def _raw(kind: str, dialect: str, condition: ColumnElement[bool]) -> Any:
    """Verdicts as rollup rows (one each), for the kind's breakdown."""
    c = O.c
    everything = kind == "all"
    return select(
        _day(dialect).label("day"),
        c.chat_model.label("chat_model"),
        _key(kind).label("key"),
        c.outcome.label("outcome"),
        (c.current if everything else literal(True, Boolean)).label("current"),
        (c.reopened if everything else literal(False, Boolean)).label("reopened"),
        literal(1, Integer).label("n"),
        func.coalesce(c.cost_usd, 0.0).label("cost_usd"),
    ).where(condition if everything else and_(condition, c.current))


def refresh(engine: Engine) -> int:
    """Recompute the rollup's queued days, in a transaction of its own (a page's reads then
    wait for no lock). Returns how many days. A read replica's refresh runs on its primary."""
    engine = writer(engine)
    with engine.connect() as connection:
        if connection.execute(select(D.c.id).limit(1)).first() is None:
            return 0  # nothing queued: the usual case, and no write
    with engine.begin() as connection:
        return refresh_in(connection)


def refresh_in(connection: Connection) -> int:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(REFRESH_LOCK)))
    # Taken inside this transaction: a verdict written meanwhile queues its day again.
    days = sorted(set(connection.execute(delete(D).returning(D.c.day)).scalars()))
    if not days:
        return 0
    for i in range(0, len(days), 500):
        chunk = days[i : i + 500]
        connection.execute(delete(R).where(R.c.day.in_(chunk)))
        starts = []
        for day in chunk:
            try:
                starts.append(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC))
            except (TypeError, ValueError):
                continue  # not a day (cannot come from the triggers)
        ranges = [
            and_(O.c.ended_at >= a, O.c.ended_at < b) for a, b in _ranges(starts, timedelta(days=1))
        ]
        if not ranges:
            continue
        for kind in KINDS:
            rows = _raw(kind, dialect, or_(*ranges)).subquery()
            group = [rows.c[name] for name in ("day", "chat_model", "key", "outcome")]
            group += [rows.c.current, rows.c.reopened]
            connection.execute(
                insert(R).from_select(
                    ROLLUP_COLUMNS,
                    select(
                        literal(kind, String),
                        *group,
                        func.count(),
                        func.coalesce(func.sum(rows.c.cost_usd), 0.0),
                    ).group_by(*group),
                )
            )
    return len(days)


def _source(connection: Connection, filters: Filters, kind: str) -> Subquery:
    """Rollup rows of `kind` for the filters: whole days from the rollup, the range's partial
    days (or everything, with a user or session filter) from the verdicts. Call refresh()
    first."""
    dialect = connection.dialect.name
    start, end = filters.start.astimezone(UTC), filters.end.astimezone(UTC)
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    first = midnight if midnight == start else midnight + timedelta(days=1)
    last = end.replace(hour=0, minute=0, second=0, microsecond=0)
    base = where(filters, current=False)
    if filters.user or filters.session or first >= last:
        return _raw(kind, dialect, base).subquery()
    edges = or_(O.c.ended_at < first, O.c.ended_at >= last)
    rolled = [R.c.kind == kind, R.c.day >= f"{first:%Y-%m-%d}", R.c.day < f"{last:%Y-%m-%d}"]
    if filters.models:
        rolled.append(R.c.chat_model.in_(filters.models))
    columns = ("day", "chat_model", "key", "outcome", "current", "reopened", "n", "cost_usd")
    return union_all(
        select(*[R.c[name] for name in columns]).where(*rolled),
        _raw(kind, dialect, and_(base, edges)),
    ).subquery()


def _counts(s: Subquery) -> list[Any]:
    judged = s.c.outcome != "unjudged"

    def total(condition: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((condition, s.c.n), else_=0)), 0)

    return [
        total(judged).label("ended"),
        *[total(s.c.outcome == name).label(name) for name in OUTCOMES],
        total(s.c.outcome == "unjudged").label("unjudged"),
        total(and_(judged, s.c.chat_model.is_not(None))).label("involved"),
        func.coalesce(func.sum(case((judged, s.c.cost_usd), else_=0.0)), 0.0).label("cost_usd"),
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
    refresh(engine)
    with engine.connect() as connection:
        s = _source(connection, filters, "all")
        row = connection.execute(select(*_counts(s)).where(s.c.current)).one()
        resolved = s.c.outcome == "resolved"
        reopen = connection.execute(
            select(
                func.coalesce(func.sum(case((resolved, s.c.n), else_=0)), 0),
                func.coalesce(func.sum(case((and_(resolved, s.c.reopened), s.c.n), else_=0)), 0),
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
    kind = "all" if dimension in ("day", "chat_model") else dimension
    refresh(engine)
    with engine.connect() as connection:
        s = _source(connection, filters, kind)
        key: Any = {
            "day": s.c.day,
            "chat_model": func.coalesce(s.c.chat_model, literal("(none)")),
        }.get(dimension, s.c.key)
        query = select(key.label(dimension), *_counts(s)).where(s.c.current).group_by(key)
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
    frames = []
    refresh(engine)
    with engine.connect() as connection:
        for by_name, kind in (("peak context", "band"), ("summarizations", "folds")):
            s = _source(connection, filters, kind)
            rows = connection.execute(
                select(s.c.key, *_counts(s)).where(s.c.current).group_by(s.c.key)
            ).all()
            frame = pd.DataFrame(
                [tuple(r) for r in rows],
                columns=["group", "ended", *OUTCOMES, "unjudged", "involved", "cost_usd"],
            )
            frame.insert(0, "by", by_name)
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
    refresh(engine)
    with engine.connect() as connection:
        # The count from the rollup where it can (a count of the verdicts reads every one).
        s = _source(connection, filters, "all")
        counted = select(func.coalesce(func.sum(s.c.n), 0)).where(s.c.current)
        if outcome:
            counted = counted.where(s.c.outcome == outcome)
        total = int(connection.execute(counted).scalar() or 0)
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
