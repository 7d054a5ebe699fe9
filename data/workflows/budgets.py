"""Budgets: spending limits per user, per user-id prefix or for everyone, per UTC day or
calendar month. This module creates, changes and deletes them (audited) and keeps their
history; the rules are in budget_rules, what has been spent in budget_spend, what the agent
asks before each model call in budget_guard, and the budgets page's report in budget_report."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pandas as pd
from sqlalchemy import (
    Connection,
    Engine,
    delete,
    insert,
    select,
    update,
)

from data.store.orm import utcnow
from data.store.orm_team import BUDGET_PERIODS, BUDGET_SCOPES, Budget, BudgetAlert, BudgetChange
from data.workflows.budget_rules import (
    DEFAULT_WARN_FRACTION,
    MAX_LIMIT_USD,
    BudgetInputError,
    BudgetRow,
    _row,
)
from data.workflows.budget_spend import _invalidate

# -- managing budgets ----------------------------------------------------------------------


def _validate(
    scope_kind: str, scope_value: str, period: str, limit_usd: float, warn_fraction: float
) -> tuple[str, str, str, float, float]:
    scope_kind = (scope_kind or "").strip()
    scope_value = " ".join((scope_value or "").split())
    if scope_kind not in BUDGET_SCOPES:
        raise BudgetInputError(f"Scope must be one of {', '.join(BUDGET_SCOPES)}.")
    if scope_kind == "all":
        scope_value = ""
    elif not scope_value:
        what = "user id" if scope_kind == "user" else "user-id prefix"
        raise BudgetInputError(f"Enter the {what} this budget applies to.")
    elif len(scope_value) > 128:
        raise BudgetInputError("The user id or prefix is longer than 128 characters.")
    if period not in BUDGET_PERIODS:
        raise BudgetInputError("Period must be 'day' or 'month'.")
    try:
        limit = float(limit_usd)
        warn = float(warn_fraction)
    except (TypeError, ValueError):
        raise BudgetInputError("The amount and the warning threshold must be numbers.") from None
    if not 0 < limit <= MAX_LIMIT_USD:
        raise BudgetInputError(f"The amount must be above $0 and at most ${MAX_LIMIT_USD:,.0f}.")
    if not 0 < warn <= 1:
        raise BudgetInputError("The warning threshold must be above 0 % and at most 100 %.")
    return scope_kind, scope_value, period, round(limit, 6), warn


def _snapshot(budget: BudgetRow | None) -> str | None:
    return None if budget is None else json.dumps(asdict(budget), sort_keys=True)


def _duplicate(
    connection: Connection, kind: str, value: str, period: str, except_id: int | None
) -> bool:
    query = select(Budget.id).where(
        Budget.active.is_(True),
        Budget.scope_kind == kind,
        Budget.scope_value == value,
        Budget.period == period,
    )
    if except_id is not None:
        query = query.where(Budget.id != except_id)
    return connection.execute(query.limit(1)).first() is not None


def create_budget(
    *,
    engine: Engine,
    scope_kind: str = "all",
    scope_value: str = "",
    period: str,
    limit_usd: float,
    warn_fraction: float = DEFAULT_WARN_FRACTION,
    actor: str,
) -> BudgetRow:
    """Add a budget (and its history entry); one active budget per scope and period."""
    kind, value, period, limit, warn = _validate(
        scope_kind, scope_value, period, limit_usd, warn_fraction
    )
    actor = actor.strip() or "unknown"
    now = utcnow()
    with engine.begin() as connection:
        if _duplicate(connection, kind, value, period, None):
            raise BudgetInputError(
                f"There is already a {period} budget for {kind if kind == 'all' else value}; "
                "edit that one instead."
            )
        budget_id = connection.execute(
            insert(Budget)
            .values(
                scope_kind=kind,
                scope_value=value,
                period=period,
                limit_usd=limit,
                warn_fraction=warn,
                active=True,
                created_at=now,
                created_by=actor,
                updated_at=now,
                updated_by=actor,
            )
            .returning(Budget.id)
        ).scalar_one()
        row = BudgetRow(budget_id, kind, value, period, limit, warn)
        connection.execute(
            insert(BudgetChange).values(
                budget_id=budget_id, ts=now, actor=actor, action="create", after=_snapshot(row)
            )
        )
    return row


def update_budget(
    *,
    engine: Engine,
    budget_id: int,
    actor: str,
    limit_usd: float | None = None,
    warn_fraction: float | None = None,
    period: str | None = None,
) -> BudgetRow:
    """Change a budget's amount, threshold or period. Its crossings of the current period are
    forgotten, so a threshold that is still (or newly) passed is alerted again."""
    actor = actor.strip() or "unknown"
    with engine.begin() as connection:
        found = connection.execute(
            select(Budget).where(Budget.id == budget_id, Budget.active.is_(True))
        ).first()
        if found is None:
            raise BudgetInputError(f"Budget {budget_id} does not exist (or was deleted).")
        before = _row(found)
        kind, value, new_period, limit, warn = _validate(
            before.scope_kind,
            before.scope_value,
            period or before.period,
            before.limit_usd if limit_usd is None else limit_usd,
            before.warn_fraction if warn_fraction is None else warn_fraction,
        )
        if new_period != before.period and _duplicate(
            connection, kind, value, new_period, budget_id
        ):
            raise BudgetInputError(f"There is already a {new_period} budget for this scope.")
        after = BudgetRow(budget_id, kind, value, new_period, limit, warn)
        if after == before:
            return before
        now = utcnow()
        connection.execute(
            update(Budget)
            .where(Budget.id == budget_id)
            .values(
                period=new_period,
                limit_usd=limit,
                warn_fraction=warn,
                updated_at=now,
                updated_by=actor,
            )
        )
        connection.execute(delete(BudgetAlert).where(BudgetAlert.budget_id == budget_id))
        connection.execute(
            insert(BudgetChange).values(
                budget_id=budget_id,
                ts=now,
                actor=actor,
                action="update",
                before=_snapshot(before),
                after=_snapshot(after),
            )
        )
    _invalidate()
    return after


def delete_budget(*, engine: Engine, budget_id: int, actor: str) -> None:
    """Deactivate a budget; its history stays."""
    actor = actor.strip() or "unknown"
    with engine.begin() as connection:
        found = connection.execute(
            select(Budget).where(Budget.id == budget_id, Budget.active.is_(True))
        ).first()
        if found is None:
            raise BudgetInputError(f"Budget {budget_id} does not exist (or was deleted).")
        now = utcnow()
        connection.execute(
            update(Budget)
            .where(Budget.id == budget_id)
            .values(active=False, updated_at=now, updated_by=actor)
        )
        connection.execute(
            insert(BudgetChange).values(
                budget_id=budget_id,
                ts=now,
                actor=actor,
                action="delete",
                before=_snapshot(_row(found)),
            )
        )
    _invalidate()


def list_budgets(*, engine: Engine) -> list[BudgetRow]:
    """The active budgets, everyone's first, then prefixes, then users."""
    order = {"all": 0, "prefix": 1, "user": 2}
    with engine.connect() as connection:
        rows = [
            _row(r) for r in connection.execute(select(Budget).where(Budget.active.is_(True))).all()
        ]
    return sorted(rows, key=lambda b: (order[b.scope_kind], b.scope_value, b.period))


def history(*, engine: Engine, limit: int = 500) -> pd.DataFrame:
    """Every change to a budget, newest first: who, when, what, before and after."""
    query = (
        select(
            BudgetChange.ts,
            BudgetChange.actor,
            BudgetChange.action,
            BudgetChange.budget_id,
            BudgetChange.before,
            BudgetChange.after,
        )
        .order_by(BudgetChange.ts.desc(), BudgetChange.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(query).mappings().all())
    columns = ["ts", "actor", "action", "budget_id", "scope", "change"]
    if frame.empty:
        return pd.DataFrame(columns=columns)

    def describe(raw: Any) -> dict[str, Any]:
        return json.loads(raw) if isinstance(raw, str) and raw else {}

    scopes, changes = [], []
    for before_raw, after_raw in zip(frame["before"], frame["after"], strict=True):
        before, after = describe(before_raw), describe(after_raw)
        either = after or before
        kind, value = either.get("scope_kind"), either.get("scope_value")
        scopes.append("all" if kind == "all" else f"{kind}:{value}")
        parts = []
        for key in ("period", "limit_usd", "warn_fraction"):
            old, new = before.get(key), after.get(key)
            if old != new:
                parts.append(f"{key} {old if old is not None else '–'} → {new or '–'}")
        changes.append("; ".join(parts))
    frame["scope"], frame["change"] = scopes, changes
    return frame[columns]


# -- spend ---------------------------------------------------------------------------------


# -- admission -----------------------------------------------------------------------------


# -- the Cost page's budget section --------------------------------------------------------
