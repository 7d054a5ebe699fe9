"""What the agent asks before each model call: admit (with a reservation of the call's estimate)
or refuse, warn once per period when a threshold is crossed, and post that crossing to
BUDGET_WEBHOOK_URL from exactly one replica."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import (
    Engine,
    delete,
    insert,
    update,
)
from sqlalchemy.exc import IntegrityError

from data.store.orm import utcnow
from data.store.orm_team import BudgetAlert, BudgetReservation
from data.workflows.budget_report import scopes_past_warning
from data.workflows.budget_rules import (
    PAST_WARNING,
    REFUSALS,
    Admission,
    BudgetState,
)
from data.workflows.budget_spend import budgets_for, states_of

log = logging.getLogger(__name__)


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
