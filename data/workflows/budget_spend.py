"""What has been spent against a budget.

Spend is the recorded cost of every model call of the scope in the period (chat, summarizer
and embedder rows alike) plus the reservations of the calls still in flight:

- recorded: the exact rollups (data/analytics/rollups.py) for the period's closed, clean hours,
  and the raw `model_calls` rows for the current hour and any hour still marked dirty. The
  rollup part depends only on (scope, period start, current hour, dirty hours), so it is cached
  under that key and stays exact; a check costs two small indexed queries.
- reserved: `budget_reservations` rows, one per call in flight, each the call's estimated cost
  (counted input tokens + the completion limit). `admit` writes its reservation first and then
  reads the spend, reservations before recorded rows, and the reservation is removed only once
  the call's own row is committed. So every admitted call has seen every call admitted before
  it (on this replica or another: the rows are in the shared database), a finished call is
  never missed, and the overshoot past a limit is bounded by what the calls in flight cost
  beyond their estimates."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    case,
    func,
    or_,
    select,
)

from data.analytics.rollups import _ranges
from data.store.orm import ModelCall
from data.store.orm_rollups import RollupDirty, RollupHourly, RollupSessionHourly
from data.store.orm_team import Budget, BudgetReservation
from data.workflows.budget_rules import (
    BudgetRow,
    BudgetState,
    _row,
    _scope_where,
    period_bounds,
)

_cache_lock = threading.Lock()


_closed_cache: OrderedDict[tuple[Any, ...], float] = OrderedDict()


_CACHE_SIZE = 4096


def _invalidate() -> None:
    with _cache_lock:
        _closed_cache.clear()


def _closed_hours_cost(
    connection: Connection,
    budget: BudgetRow,
    start: datetime,
    hour: datetime,
    dirty: Sequence[datetime],
) -> float:
    """Recorded cost of the scope's clean, closed hours in [start, hour), from the rollups."""
    if start >= hour:
        return 0.0
    key = (budget.scope_kind, budget.scope_value, start, hour, tuple(dirty))
    with _cache_lock:
        if key in _closed_cache:
            _closed_cache.move_to_end(key)
            return _closed_cache[key]
    if budget.scope_kind == "all":
        table: Any = RollupHourly
        query = select(func.coalesce(func.sum(table.cost_usd), 0.0))
    else:
        table = RollupSessionHourly
        query = select(func.coalesce(func.sum(table.cost_usd), 0.0)).where(
            _scope_where(table.user_id, budget)
        )
    query = query.where(table.hour >= start, table.hour < hour)
    if dirty:
        query = query.where(table.hour.not_in(list(dirty)))
    value = float(connection.execute(query).scalar_one())
    with _cache_lock:
        _closed_cache[key] = value
        while len(_closed_cache) > _CACHE_SIZE:
            _closed_cache.popitem(last=False)
    return value


def _recorded(connection: Connection, budgets: Sequence[BudgetRow], now: datetime) -> list[float]:
    """The recorded cost of each budget's scope in its current period (exact): cached rollup
    sums of the clean closed hours plus one statement over the raw rows of the current hour
    and the dirty hours, summed per budget."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    starts = [period_bounds(b.period, now)[0] for b in budgets]
    earliest = min(starts)
    dirty_all = sorted(
        connection.execute(
            select(RollupDirty.hour).where(RollupDirty.hour >= earliest, RollupDirty.hour < hour)
        ).scalars()
    )
    c = ModelCall.__table__.c
    closed, sums, conditions = [], [], []
    for budget, start in zip(budgets, starts, strict=True):
        dirty = [h for h in dirty_all if h >= start]
        closed.append(_closed_hours_cost(connection, budget, start, hour, dirty))
        ranges = [c.ts >= max(start, hour)]
        ranges += [and_(c.ts >= a, c.ts < b) for a, b in _ranges(dirty, timedelta(hours=1))]
        condition = and_(or_(*ranges), _scope_where(c.user_id, budget))
        conditions.append(condition)
        sums.append(func.coalesce(func.sum(case((condition, c.cost_usd), else_=0.0)), 0.0))
    raw = connection.execute(select(*sums).where(or_(*conditions))).one()
    return [a + float(b) for a, b in zip(closed, raw, strict=True)]


def recorded_spend(connection: Connection, budget: BudgetRow, now: datetime) -> float:
    """The recorded cost of the budget's scope in its current period (exact)."""
    return _recorded(connection, [budget], now)[0]


def _reserved(connection: Connection, budgets: Sequence[BudgetRow], now: datetime) -> list[float]:
    r = BudgetReservation.__table__.c
    sums = [
        func.coalesce(func.sum(case((_scope_where(r.user_id, b), r.amount_usd), else_=0.0)), 0.0)
        for b in budgets
    ]
    return [float(v) for v in connection.execute(select(*sums).where(r.expires_at > now)).one()]


def reserved_spend(connection: Connection, budget: BudgetRow, now: datetime) -> float:
    """Estimated cost of the scope's calls in flight (unexpired reservations)."""
    return _reserved(connection, [budget], now)[0]


def states_of(
    connection: Connection, budgets: Sequence[BudgetRow], now: datetime
) -> list[BudgetState]:
    """Each budget's spend now. Reservations are read first: a reservation released after this
    read belongs to a call whose row was committed before the release, so the next read sees
    that row. Nothing is missed."""
    if not budgets:
        return []
    reserved = _reserved(connection, budgets, now)
    recorded = _recorded(connection, budgets, now)
    out = []
    for budget, held, spent in zip(budgets, reserved, recorded, strict=True):
        start, end = period_bounds(budget.period, now)
        out.append(BudgetState(budget, start, end, recorded_usd=spent, reserved_usd=held))
    return out


def state_of(connection: Connection, budget: BudgetRow, now: datetime) -> BudgetState:
    return states_of(connection, [budget], now)[0]


def budgets_for(connection: Connection, user_id: str) -> list[BudgetRow]:
    b = Budget.__table__.c
    rows = connection.execute(
        select(Budget).where(
            b.active.is_(True),
            or_(
                b.scope_kind == "all",
                and_(b.scope_kind == "user", b.scope_value == user_id),
                b.scope_kind == "prefix",
            ),
        )
    ).all()
    return [budget for budget in map(_row, rows) if budget.covers(user_id)]
