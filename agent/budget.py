"""Budget enforcement in the agent loop: `BudgetMiddleware` asks data/workflows/budgets.py before
each model call and refuses the turn before any model call when a budget would be exceeded.

It is the outermost `wrap_model_call`, so it asks before memory recall (which embeds the
message) and before summarization (which calls the summarizer), both of which run inside the
model call: a refused turn makes no model call at all. It is a wrapper rather than a
`before_model` hook because each hook is one more step of the graph in every turn. The
estimate is the request's counted input tokens (its messages and the system prompt, counted the
way the summarization middleware counts them) plus the completion limit, priced by genai-prices
(data/integrations/prices.py). The reservation made for that estimate is released once the call, its
retries and its fallback have ended, and their rows are recorded.

Warnings (a budget past its warning threshold) travel with the turn (`TurnContext.warn`), and
the chat service puts them in the turn's outcome."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.messages.utils import count_tokens_approximately
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from agent.context import current_turn, outside_turn
from agent.middleware import EventSink, emit
from agent.prompts import SYSTEM_PROMPT
from data.integrations.prices import Rate, price_call
from data.store.records import BudgetRefusalDetail
from data.workflows.budget_guard import Guard
from data.workflows.budget_rules import BudgetState, refusal_text

log = logging.getLogger(__name__)

# (counted input tokens) -> estimated USD of one call
Estimator = Callable[[int], float]
# (session_id, turn, action): run the action once the turn's records are written, or False
AfterWrite = Callable[[str, int, Callable[[], None]], bool]


class BudgetExceeded(RuntimeError):
    """A turn was refused before any model call because a budget would be exceeded.

    `message` is for the user; `body()` is the API's HTTP 402 JSON body."""

    status_code = 402

    def __init__(self, state: BudgetState) -> None:
        self.message = refusal_text(state)
        super().__init__(self.message)
        self.scope = state.budget.scope
        self.period = state.budget.period
        self.spent_usd = round(state.spent_usd, 6)
        self.limit_usd = state.budget.limit_usd
        self.resets_at = state.period_end

    def body(self) -> dict[str, Any]:
        return {
            "error": "budget_exceeded",
            "message": self.message,
            "scope": self.scope,
            "period": self.period,
            "spent_usd": self.spent_usd,
            "limit_usd": self.limit_usd,
        }

    def detail(self, *, estimate_usd: float) -> BudgetRefusalDetail:
        """The refusal's recorded event detail: the body, and the refused call's estimate."""
        return BudgetRefusalDetail(
            error="budget_exceeded",
            message=self.message,
            scope=self.scope,
            period=self.period,
            spent_usd=self.spent_usd,
            limit_usd=self.limit_usd,
            estimate_usd=estimate_usd,
        )


def price_estimator(
    *, provider: str, model: str, max_tokens: int, overrides: dict[str, Rate] | None = None
) -> Estimator:
    """USD of one call with `n` input tokens and a full completion; 0 when unpriced."""

    def estimate(input_tokens: int) -> float:
        price = price_call(
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            cached_input_tokens=0,
            output_tokens=max_tokens,
            overrides=overrides,
        )
        return price.cost_usd or 0.0

    return estimate


class BudgetMiddleware(AgentMiddleware):  # type: ignore[type-arg]
    """Refuse a model call that would exceed a budget; reserve its estimate while it runs."""

    def __init__(
        self,
        *,
        guard: Guard,
        estimate: Estimator,
        events: EventSink | None = None,
        after_write: AfterWrite | None = None,
    ) -> None:
        super().__init__()
        self.guard = guard
        self.estimate = estimate
        self.events = events
        self.after_write = after_write
        self._system_tokens = count_tokens_approximately([("system", SYSTEM_PROMPT)])

    def admit(self, messages: Sequence[Any]) -> str | None:
        """Check the user's budgets for one call with these messages: the reservation's id
        (None when no budget covers the user, or the check failed open). Raises
        BudgetExceeded, recorded as a `budget_refusal` event, when a budget would be passed."""
        context = current_turn() or outside_turn()
        user_id = context.user_id

        def estimate() -> float:
            tokens = count_tokens_approximately(list(messages)) + self._system_tokens
            return self.estimate(tokens)

        try:
            admission = self.guard.admit(user_id=user_id, estimate_usd=estimate)
        except SQLAlchemyError as failure:
            # Fail open: the database that holds the budgets also records the calls, so this is
            # rare and short; the turn goes ahead and says that budgets were not checked.
            log.warning("budgets could not be checked for %s: %s", user_id, failure)
            context.warn("Budgets could not be checked (the database is unavailable).")
            return None
        if admission.refused is not None:
            error = BudgetExceeded(admission.refused)
            emit(
                self.events,
                "budget_refusal",
                "budget",
                0.0,
                status="refused",
                error=error.message,
                detail=error.detail(estimate_usd=round(admission.estimate_usd, 6)),
            )
            raise error
        if admission.warnings:
            context.warn(*admission.warnings)
        return admission.reservation_id

    def wrap_model_call(
        self,
        request: ModelRequest,  # type: ignore[type-arg]
        handler: Callable[[ModelRequest], ModelResponse],  # type: ignore[type-arg]
    ) -> ModelResponse:  # type: ignore[type-arg]
        reservation = self.admit(request.messages)
        try:
            return handler(request)
        finally:
            self._release(reservation)

    def _release(self, reservation: str | None) -> None:
        """Release once the call's rows (every retry, the fallback) are committed: now, or,
        when the turn's records are written together at its end (agent/ledger.py), then."""
        if reservation is None:
            return
        context = current_turn() or outside_turn()
        if self.after_write is not None and self.after_write(
            context.session_id, context.turn, lambda: self.guard.release(reservation)
        ):
            return
        self.guard.release(reservation)


def make_budget_middleware(
    *,
    engine: Engine,
    estimate: Estimator,
    events: EventSink | None,
    reservation_ttl_s: float,
    webhook_url: str | None,
    after_write: AfterWrite | None = None,
) -> BudgetMiddleware:
    guard = Guard(engine, reservation_ttl_s=reservation_ttl_s, webhook_url=webhook_url)
    return BudgetMiddleware(guard=guard, estimate=estimate, events=events, after_write=after_write)
