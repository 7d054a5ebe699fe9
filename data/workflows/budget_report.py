"""The budgets page's report: every budget with its spend and forecast, the scopes past their
warning, and the users near or over a limit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import (
    Engine,
    func,
    select,
)

from data.analytics.freshness import ensure_fresh
from data.store.orm import utcnow
from data.store.orm_rollups import RollupSessionHourly
from data.store.orm_team import Budget, BudgetAlert
from data.workflows.budget_rules import (
    _scope_where,
    period_bounds,
)
from data.workflows.budget_spend import states_of
from data.workflows.budgets import list_budgets


def scopes_past_warning(*, engine: Engine, now: datetime | None = None) -> int:
    """Active budgets with a warning crossing in their current period (the gauge's value)."""
    now = now or utcnow()
    with engine.connect() as connection:
        rows = connection.execute(
            select(Budget.id, Budget.period, BudgetAlert.period_start)
            .join(BudgetAlert, BudgetAlert.budget_id == Budget.id)
            .where(Budget.active.is_(True), BudgetAlert.level == "warning")
        ).all()
    current = {
        budget_id for budget_id, period, start in rows if start == period_bounds(period, now)[0]
    }
    return len(current)


def budget_report(*, engine: Engine, now: datetime | None = None) -> pd.DataFrame:
    """Each active budget: spend in its current period, the forecast to the period's end at
    the period's rate so far, and its status: ok, on course to exceed, warning, limit reached
    (a call was refused this period) or over."""
    now = now or utcnow()
    columns = [
        "budget_id",
        "scope",
        "period",
        "period_start",
        "period_end",
        "limit_usd",
        "warn_at_usd",
        "spent_usd",
        "used_percent",
        "forecast_usd",
        "forecast_percent",
        "status",
    ]
    budgets = list_budgets(engine=engine)
    rows = []
    with engine.connect() as connection:
        alerts = set(
            connection.execute(
                select(BudgetAlert.budget_id, BudgetAlert.period_start).where(
                    BudgetAlert.level == "exceeded"
                )
            ).all()
        )
        for state in states_of(connection, budgets, now):
            budget = state.budget
            elapsed = (now - state.period_start).total_seconds()
            length = (state.period_end - state.period_start).total_seconds()
            forecast = state.spent_usd * length / elapsed if elapsed > 0 else state.spent_usd
            level = state.level
            if level != "exceeded" and (budget.id, state.period_start) in alerts:
                level = "limit reached"  # a call was refused in this period
            elif level == "ok" and forecast >= budget.limit_usd:
                level = "on course to exceed"
            rows.append(
                {
                    "budget_id": budget.id,
                    "scope": budget.scope,
                    "period": budget.period,
                    "period_start": state.period_start,
                    "period_end": state.period_end,
                    "limit_usd": budget.limit_usd,
                    "warn_at_usd": budget.warn_usd,
                    "spent_usd": state.spent_usd,
                    "used_percent": 100 * state.spent_usd / budget.limit_usd,
                    "forecast_usd": forecast,
                    "forecast_percent": 100 * forecast / budget.limit_usd,
                    "status": {"exceeded": "over"}.get(level, level),
                }
            )
    return pd.DataFrame(rows, columns=columns)


def users_near_or_over(*, engine: Engine, now: datetime | None = None) -> pd.DataFrame:
    """Users whose own spend is past the warning threshold of a budget that covers them: for
    a user budget the user, for a prefix or global budget each member at or past the warning
    amount of that budget, and the user of a user budget that refused a call this period
    (read from the exact session rollup, refreshed first)."""
    now = now or utcnow()
    columns = ["user_id", "budget", "period", "spent_usd", "limit_usd", "used_percent", "status"]
    rows: list[dict[str, Any]] = []
    ensure_fresh(engine)
    r = RollupSessionHourly.__table__.c
    spent_sum = func.coalesce(func.sum(r.cost_usd), 0.0)
    with engine.connect() as connection:
        refused = set(
            connection.execute(
                select(BudgetAlert.budget_id, BudgetAlert.period_start).where(
                    BudgetAlert.level == "exceeded"
                )
            ).all()
        )
        for budget in list_budgets(engine=engine):
            start, end = period_bounds(budget.period, now)
            stopped = (budget.id, start) in refused
            query = (
                select(r.user_id, spent_sum)
                .where(r.hour >= start, r.hour < end, _scope_where(r.user_id, budget))
                .group_by(r.user_id)
            )
            if not (stopped and budget.scope_kind == "user"):
                query = query.having(spent_sum >= budget.warn_usd)
            for user_id, spent in connection.execute(query).all():
                spent = float(spent)
                status = "warning"
                if spent > budget.limit_usd:
                    status = "over"
                elif stopped and budget.scope_kind == "user":
                    status = "limit reached"
                rows.append(
                    {
                        "user_id": user_id,
                        "budget": budget.scope,
                        "period": budget.period,
                        "spent_usd": spent,
                        "limit_usd": budget.limit_usd,
                        "used_percent": 100 * spent / budget.limit_usd,
                        "status": status,
                    }
                )
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("used_percent", ascending=False, ignore_index=True)
