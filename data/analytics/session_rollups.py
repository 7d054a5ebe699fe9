"""The per-session and per-user rollups: sums, p95 latency and peak context of every session
and user, rebuilt for the sessions a refresh touched."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    Connection,
    Float,
    String,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

from data.analytics.measures import METRICS, PERCENT, C
from data.analytics.percentiles import percentiles
from data.store.orm_rollups import RollupSessionHourly, RollupSessions, RollupUsers

SESSION_COLUMNS = (
    "session_id",
    "model",
    "user_id",
    "calls",
    "tokens",
    "cost_usd",
    "unpriced_calls",
    "summarizations",
    "max_turn",
    "first_call",
    "last_call",
    "peak_context_percent",
    "chat_calls",
)


def session_aggregate(where: ColumnElement[bool], *extra_groups: Any) -> Any:
    """Per-session figures of the raw rows matching `where`, grouped by session, model and any
    `extra_groups` (which come first): the one definition behind rollup_session_hourly and the
    raw-row path of the per-session tables."""
    chat_ok = and_(C.purpose == "chat", C.status == "ok")
    return (
        select(
            *extra_groups,
            C.session_id,
            C.model,
            func.min(C.user_id).label("user_id"),
            func.count().label("calls"),
            func.sum(C.input_tokens + C.output_tokens).label("tokens"),
            func.coalesce(func.sum(C.cost_usd), 0.0).label("cost_usd"),
            func.sum(case((C.cost_status == "unknown", 1), else_=0)).label("unpriced_calls"),
            func.sum(case((C.purpose == "summarize", 1), else_=0)).label("summarizations"),
            func.max(C.turn).label("max_turn"),
            func.min(C.ts).label("first_call"),
            func.max(C.ts).label("last_call"),
            func.max(case((chat_ok, PERCENT))).label("peak_context_percent"),
            func.sum(case((C.purpose == "chat", 1), else_=0)).label("chat_calls"),
        )
        .where(where)
        .group_by(*extra_groups, C.session_id, C.model)
    )


H = RollupSessionHourly.__table__.c


RS: Table = RollupSessions.__table__  # type: ignore[assignment]


RU: Table = RollupUsers.__table__  # type: ignore[assignment]


# Above this many changed sessions, rebuilding both tables whole is faster than row by row.
BULK_SESSIONS = 5000


CHUNK = 500


def _session_sums(where: ColumnElement[bool], *, all_models: bool) -> Any:
    """rollup_sessions rows (without chat_model and latency_p95_ms) from the hourly rows."""
    model = literal("*").label("model") if all_models else H.model
    groups = [H.session_id] if all_models else [H.session_id, H.model]
    return (
        select(
            H.session_id.label("session_id"),
            model,
            func.min(H.user_id).label("user_id"),
            func.sum(H.calls).label("calls"),
            func.sum(H.chat_calls).label("chat_calls"),
            func.sum(H.tokens).label("tokens"),
            func.sum(H.cost_usd).label("cost_usd"),
            func.sum(H.unpriced_calls).label("unpriced_calls"),
            func.sum(H.summarizations).label("summarizations"),
            func.max(H.max_turn).label("max_turn"),
            func.min(H.first_call).label("first_call"),
            func.max(H.last_call).label("last_call"),
            func.max(H.peak_context_percent).label("peak_context_percent"),
        )
        .where(where)
        .group_by(*groups)
    )


SESSION_SUM_COLUMNS = [
    "session_id",
    "model",
    "user_id",
    "calls",
    "chat_calls",
    "tokens",
    "cost_usd",
    "unpriced_calls",
    "summarizations",
    "max_turn",
    "first_call",
    "last_call",
    "peak_context_percent",
]


def _rebuild_sessions(connection: Connection, sessions: list[str] | None) -> None:
    """Recompute the rollup_sessions rows of `sessions` (None: every session). Each row is
    written once, complete (an UPDATE afterwards would touch every index of every row)."""
    parts = [None] if sessions is None else list(_chunked(sessions))
    postgres = connection.dialect.name == "postgresql"
    value, condition = METRICS["latency"]
    for part in parts:
        hourly = H.session_id.in_(part) if part is not None else literal(True)
        raw = and_(condition, C.session_id.in_(part) if part is not None else literal(True))
        connection.execute(
            delete(RS).where(RS.c.session_id.in_(part) if part is not None else literal(True))
        )
        per_model = _session_sums(hourly, all_models=False).subquery("per_model")
        # The session's chat model: most chat calls, then the name (review's definition).
        ranked = select(
            per_model.c.session_id,
            per_model.c.model,
            func.row_number()
            .over(
                partition_by=per_model.c.session_id,
                order_by=(per_model.c.chat_calls.desc(), per_model.c.model),
            )
            .label("rn"),
        ).subquery("ranked")
        chat = select(ranked.c.session_id, ranked.c.model).where(ranked.c.rn == 1).subquery("chat")
        for all_models in (False, True):
            sums = (
                per_model
                if not all_models
                else _session_sums(hourly, all_models=True).subquery("sums")
            )
            columns: list[Any] = [sums.c[name] for name in SESSION_SUM_COLUMNS]
            source = sums
            if all_models:
                source = source.outerjoin(chat, chat.c.session_id == sums.c.session_id)
                columns.append(chat.c.model.label("chat_model"))
            else:
                columns.append(literal(None, String).label("chat_model"))
            if postgres:
                groups = [C.session_id] if all_models else [C.session_id, C.model]
                p95 = (
                    select(
                        *groups,
                        func.percentile_cont(0.95).within_group(value).label("p95"),
                    )
                    .where(raw)
                    .group_by(*groups)
                    .subquery("p95")
                )
                on = p95.c.session_id == sums.c.session_id
                if not all_models:
                    on = and_(on, p95.c.model == sums.c.model)
                source = source.outerjoin(p95, on)
                columns.append(p95.c.p95)
            else:
                columns.append(literal(None, Float))
            connection.execute(
                insert(RS).from_select(
                    [*SESSION_SUM_COLUMNS, "chat_model", "latency_p95_ms"],
                    select(*columns).select_from(source),
                )
            )
        if not postgres:
            _session_latency(connection, part)


def _session_latency(connection: Connection, part: list[str] | None) -> None:
    """SQLite: each session's p95 chat latency (ok calls), per model and for '*', from its raw
    rows (SQLite has no percentile_cont; data.analytics.percentiles interpolates the same way)."""
    value, condition = METRICS["latency"]
    where = and_(condition, C.session_id.in_(part) if part is not None else literal(True))
    engine = connection.engine
    per_model = percentiles(
        engine=engine,
        value=value,
        groups=[C.session_id, C.model],
        where=where,
        quantiles=(0.95,),
        connection=connection,
    )
    overall = percentiles(
        engine=engine,
        value=value,
        groups=[C.session_id],
        where=where,
        quantiles=(0.95,),
        connection=connection,
    )
    overall["model"] = "*"
    values = [
        {"s": r["session_id"], "m": r["model"], "v": float(r["p95"])}
        for frame in (per_model, overall)
        for r in frame.to_dict("records")
    ]
    if values:
        connection.execute(
            RS.update()
            .where(RS.c.session_id == bindparam("s"), RS.c.model == bindparam("m"))
            .values(latency_p95_ms=bindparam("v")),
            values,
        )


def _rebuild_users(connection: Connection, users: list[str] | None) -> None:
    """Recompute the rollup_users rows of `users` (None: every user) from rollup_sessions."""
    parts = [None] if users is None else list(_chunked(users))
    for part in parts:
        connection.execute(
            delete(RU).where(RU.c.user_id.in_(part) if part is not None else literal(True))
        )
        connection.execute(
            insert(RU).from_select(
                [
                    "user_id",
                    "model",
                    "sessions",
                    "calls",
                    "tokens",
                    "cost_usd",
                    "unpriced_calls",
                    "first_call",
                    "last_call",
                ],
                select(
                    RS.c.user_id,
                    RS.c.model,
                    func.count(),
                    func.sum(RS.c.calls),
                    func.sum(RS.c.tokens),
                    func.sum(RS.c.cost_usd),
                    func.sum(RS.c.unpriced_calls),
                    func.min(RS.c.first_call),
                    func.max(RS.c.last_call),
                )
                .where(RS.c.user_id.in_(part) if part is not None else literal(True))
                .group_by(RS.c.user_id, RS.c.model),
            )
        )


def _chunked(values: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i : i + CHUNK]
