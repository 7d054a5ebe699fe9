"""Budgets: spending limits per user, per user-id prefix or for everyone, per UTC day or
calendar month, and what the agent asks before each model call.

Spend is the recorded cost of every model call of the scope in the period (chat, summarizer
and embedder rows alike) plus the reservations of the calls still in flight:

- recorded: the exact rollups (data/analytics/rollups.py) for the period's closed, clean hours, and
the
  raw `model_calls` rows for the current hour and any hour still marked dirty. The rollup part
  depends only on (scope, period start, current hour, dirty hours), so it is cached under that
  key and stays exact; a check costs two small indexed queries.
- reserved: `budget_reservations` rows, one per call in flight, each the call's estimated cost
  (counted input tokens + the completion limit). `admit` writes its reservation first and then
  reads the spend, reservations before recorded rows, and the reservation is removed only once
  the call's own row is committed. So every admitted call has seen every call admitted before
  it (on this replica or another: the rows are in the shared database), a finished call is
  never missed, and the overshoot past a limit is bounded by what the calls in flight cost
  beyond their estimates.

Crossing a budget's warning threshold or its limit is written to `budget_alerts` once per
period (a unique index decides between replicas); the winner posts it to BUDGET_WEBHOOK_URL."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pandas as pd
from prometheus_client import Counter, Gauge
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from data.analytics.freshness import ensure_fresh
from data.analytics.rollups import _ranges
from data.store.orm import (
    BUDGET_PERIODS,
    BUDGET_SCOPES,
    Budget,
    BudgetAlert,
    BudgetChange,
    BudgetReservation,
    ModelCall,
    RollupDirty,
    RollupHourly,
    RollupSessionHourly,
    utcnow,
)

log = logging.getLogger(__name__)

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


# -- admission -----------------------------------------------------------------------------


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


class Guard:
    """What the agent's budget middleware calls before and after each model call."""

    def __init__(
        self,
        engine: Engine,
        *,
        reservation_ttl_s: float = 300.0,
        webhook_url: str | None = None,
        webhook_timeout_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.reservation_ttl_s = reservation_ttl_s
        self.webhook_url = webhook_url
        self.webhook_timeout_s = webhook_timeout_s
        self._gauge_at = 0.0
        self._swept_at = 0.0

    def admit(
        self,
        *,
        user_id: str,
        estimate_usd: float | Callable[[], float],
        now: datetime | None = None,
    ) -> Admission:
        """Reserve `estimate_usd` for one call of `user_id`, then compare every budget that
        covers the user with its spend (this reservation included). Over a limit: the
        reservation is withdrawn and `refused` names the budget. No budget: nothing written.
        The estimate may be a function, called only when a budget covers the user (counting a
        request's tokens and pricing them is most of what a check costs when none does)."""
        now = now or utcnow()
        reservation = str(uuid.uuid4())
        with self.autocommit.connect() as connection:
            budgets = budgets_for(connection, user_id)
            if not budgets:
                return Admission(reservation_id=None)
            amount = max(float(estimate_usd() if callable(estimate_usd) else estimate_usd), 0.0)
            connection.execute(
                insert(BudgetReservation).values(
                    id=reservation,
                    user_id=user_id,
                    amount_usd=amount,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.reservation_ttl_s),
                )
            )
            states = states_of(connection, budgets, now)
        refused = next((s for s in states if s.level == "exceeded"), None)
        if refused is not None:
            self.release(reservation)
            reservation = ""
            REFUSALS.labels(refused.budget.period, refused.budget.scope_kind).inc()
        for state in states:
            if state.level != "ok":
                self._crossed(state, "warning")
        if refused is not None:
            self._crossed(refused, "exceeded")
        self._refresh_gauge(now)
        return Admission(
            reservation_id=reservation or None,
            states=states,
            refused=refused,
            estimate_usd=amount,
        )

    def release(self, reservation_id: str | None) -> None:
        """Withdraw a reservation: call this after the call's own row is committed."""
        if not reservation_id:
            return
        with self.autocommit.connect() as connection:
            connection.execute(
                delete(BudgetReservation).where(BudgetReservation.id == reservation_id)
            )
            if time.monotonic() - self._swept_at > 60:
                # Reservations of calls that never ended (a crashed replica) have expired and
                # count no more; drop them once a minute.
                self._swept_at = time.monotonic()
                connection.execute(
                    delete(BudgetReservation).where(BudgetReservation.expires_at <= utcnow())
                )

    def _crossed(self, state: BudgetState, level: str) -> None:
        """Record a crossing once per budget, period and level; the first writer alerts."""
        try:
            with self.engine.begin() as connection:
                alert_id = connection.execute(
                    insert(BudgetAlert)
                    .values(
                        budget_id=state.budget.id,
                        period_start=state.period_start,
                        level=level,
                        spent_usd=state.spent_usd,
                        limit_usd=state.budget.limit_usd,
                        ts=utcnow(),
                    )
                    .returning(BudgetAlert.id)
                ).scalar_one()
        except IntegrityError:
            return  # already alerted in this period (by this replica or another)
        self._gauge_at = 0.0
        if self.webhook_url:
            payload = crossing_payload(state, level)
            threading.Thread(
                target=self._deliver, args=(alert_id, payload), daemon=True, name="budget-webhook"
            ).start()

    def _deliver(self, alert_id: int, payload: dict[str, Any]) -> None:
        error: str | None = None
        for attempt in range(3):
            try:
                response = httpx.post(
                    str(self.webhook_url), json=payload, timeout=self.webhook_timeout_s
                )
                if response.status_code < 300:
                    error = None
                    break
                error = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            except httpx.HTTPError as failure:
                error = f"{type(failure).__name__}: {failure}"[:500]
            time.sleep(0.5 * 2**attempt)
        if error is not None:
            log.warning("budget webhook failed for alert %d: %s", alert_id, error)
        with self.autocommit.connect() as connection:
            connection.execute(
                update(BudgetAlert)
                .where(BudgetAlert.id == alert_id)
                .values(delivered_at=None if error else utcnow(), delivery_error=error)
            )

    def _refresh_gauge(self, now: datetime, every_s: float = 10.0) -> None:
        if time.monotonic() - self._gauge_at < every_s:
            return
        self._gauge_at = time.monotonic()
        try:
            PAST_WARNING.set(scopes_past_warning(engine=self.engine, now=now))
        except Exception:  # a metric never fails a turn
            log.exception("could not count the budgets past their warning threshold")


def crossing_payload(state: BudgetState, level: str) -> dict[str, Any]:
    b = state.budget
    return {
        "event": "budget_threshold_crossed",
        "level": level,
        "budget_id": b.id,
        "scope": b.scope,
        "period": b.period,
        "period_start": state.period_start.isoformat(),
        "period_end": state.period_end.isoformat(),
        "spent_usd": round(state.spent_usd, 6),
        "limit_usd": b.limit_usd,
        "threshold_usd": round(b.warn_usd if level == "warning" else b.limit_usd, 6),
    }


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


# -- the Cost page's budget section --------------------------------------------------------


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
