"""Budgets as rules: a budget's scope (one user, a user-id prefix, everyone), its period (a UTC
day or calendar month), its state against what was spent, and the texts of a warning and a
refusal."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import (
    literal,
)
from sqlalchemy.sql.elements import ColumnElement

from data.store.orm_team import Budget

DEFAULT_WARN_FRACTION = 0.8


MAX_LIMIT_USD = 1_000_000.0


REFUSALS = Counter(
    "budget_refusals_total",
    "Chat turns refused because a budget would be exceeded",
    ["period", "scope_kind"],
)


PAST_WARNING = Gauge(
    "budget_scopes_past_warning",
    "Active budgets whose spend in the current period is past their warning threshold",
)


class BudgetInputError(ValueError):
    """A budget cannot be saved as given (the text says why)."""


@dataclass(frozen=True, slots=True)
class BudgetRow:
    id: int
    scope_kind: str
    scope_value: str
    period: str
    limit_usd: float
    warn_fraction: float
    active: bool = True

    @property
    def scope(self) -> str:
        """`user:alice`, `prefix:team-a-` or `all`: how messages and the API name a scope."""
        return "all" if self.scope_kind == "all" else f"{self.scope_kind}:{self.scope_value}"

    @property
    def warn_usd(self) -> float:
        return self.limit_usd * self.warn_fraction

    def covers(self, user_id: str) -> bool:
        if self.scope_kind == "all":
            return True
        if self.scope_kind == "user":
            return user_id == self.scope_value
        return user_id.startswith(self.scope_value)


@dataclass(frozen=True, slots=True)
class BudgetState:
    """One budget as one model call sees it: spend so far (recorded + reserved, this call's own
    reservation included) against the limit."""

    budget: BudgetRow
    period_start: datetime
    period_end: datetime
    recorded_usd: float
    reserved_usd: float

    @property
    def spent_usd(self) -> float:
        return self.recorded_usd + self.reserved_usd

    @property
    def level(self) -> str:
        if self.spent_usd > self.budget.limit_usd:
            return "exceeded"
        if self.spent_usd >= self.budget.warn_usd:
            return "warning"
        return "ok"


@dataclass
class Admission:
    """The outcome of `admit`: the reservation to release after the call, and warnings."""

    reservation_id: str | None
    states: list[BudgetState] = field(default_factory=list)
    refused: BudgetState | None = None
    estimate_usd: float = 0.0

    @property
    def warnings(self) -> list[str]:
        return [warning_text(s) for s in self.states if s.level == "warning"]


def _row(budget: Budget | Any) -> BudgetRow:
    return BudgetRow(
        id=int(budget.id),
        scope_kind=budget.scope_kind,
        scope_value=budget.scope_value,
        period=budget.period,
        limit_usd=float(budget.limit_usd),
        warn_fraction=float(budget.warn_fraction),
        active=bool(budget.active),
    )


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC day or calendar month that holds `now`, as [start, end)."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _scope_where(column: Any, budget: BudgetRow) -> ColumnElement[bool]:
    if budget.scope_kind == "user":
        return column == budget.scope_value  # type: ignore[no-any-return]
    if budget.scope_kind == "prefix":
        return column.like(_escape_like(budget.scope_value) + "%", escape="\\")  # type: ignore[no-any-return]
    return literal(True)  # type: ignore[return-value]


def warning_text(state: BudgetState) -> str:
    b = state.budget
    return (
        f"Budget warning: {b.scope} has spent ${state.spent_usd:,.4f} of its "
        f"${b.limit_usd:,.2f} {b.period} budget ({100 * state.spent_usd / b.limit_usd:.0f} %, "
        f"warning at {100 * b.warn_fraction:.0f} %)."
    )


def refusal_text(state: BudgetState) -> str:
    b = state.budget
    until = f"{state.period_end:%Y-%m-%d %H:%M} UTC"
    return (
        f"This message was not sent: the {b.period} budget of ${b.limit_usd:,.2f} for "
        f"{b.scope} would be exceeded (${state.recorded_usd + state.reserved_usd:,.4f} with "
        f"this request). It resets at {until}; an admin can raise it on the Budgets page."
    )
