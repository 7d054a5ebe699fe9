"""Agent middleware of our own: summarization that records its events, the window guard, and
what to retry.

Everything here rides on LangChain's middleware (SummarizationMiddleware, ModelRetryMiddleware,
ModelFallbackMiddleware); this module adds only the measurements and the choices."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from langchain.agents.middleware import (
    AgentMiddleware,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
    SummarizationMiddleware,
)
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, RemoveMessage
from langgraph.graph.message import REMOVE_ALL_MESSAGES as REMOVE_ALL
from langgraph.types import Command

from agent.context import current_turn, outside_turn
from agent.window import ContextWindowExceeded, WindowCounter
from data.store.records import EventRecord, SummarizationDetail, WindowDetail

log = logging.getLogger(__name__)

EventSink = Callable[[EventRecord], None]


def emit(sink: EventSink | None, kind: str, name: str, latency_ms: float, **fields: Any) -> None:
    """Record one event of the running turn (user, session and turn from its TurnContext);
    a failure to record never fails the turn."""
    if sink is None:
        return
    context = current_turn() or outside_turn()
    event = EventRecord(
        user_id=context.user_id,
        session_id=context.session_id,
        turn=context.turn,
        kind=kind,
        name=name,
        latency_ms=latency_ms,
        **fields,
    )
    try:
        sink(event)
    except Exception:
        log.exception("could not record a %s event", kind)


def is_transient(error: BaseException) -> bool:
    """Retry 429, 5xx, timeouts and dropped connections; never a 4xx that will fail again."""
    if isinstance(error, openai.APIStatusError):
        return error.status_code == 429 or error.status_code >= 500
    return isinstance(
        error, openai.APIConnectionError | openai.APITimeoutError | httpx.TransportError
    )


class EmptyAnswer(RuntimeError):
    """The model answered nothing (no text and no tool call), twice in a row."""


@dataclass(frozen=True, slots=True)
class FoldPlan:
    """What one fold does: messages before `cutoff` become the summary, the rest are kept."""

    cutoff: int
    tokens_before: int  # the request as counted: overhead plus every message
    kept_tokens: int  # the kept messages alone
    configured_keep: str  # e.g. "messages:50"
    reduced: bool  # True when fewer messages were kept than `keep` asks for
    limit_tokens: int  # the trigger, in tokens


def _is_customer(message: AnyMessage) -> bool:
    return isinstance(message, HumanMessage) and not message.additional_kwargs.get("lc_source")


class RecordedSummarization(SummarizationMiddleware):
    """LangChain's SummarizationMiddleware made to hold the window on every model:

    - the request is counted whole: the system prompt and a reserve for what recall injects
      (`overhead_tokens`) plus the messages, by the serving model's tokenizer when it has one;
    - the trigger is honoured even when fewer than `keep` messages exist, and when keeping
      `keep` messages would itself pass the trigger, only as many recent messages as fit in
      `keep_budget_tokens` are kept (never fewer than the current exchange);
    - the fold runs inside the model call, not in a graph step of its own (see `fold`);
    - each fold is recorded as a `summarization` event (tokens before and after, messages
      folded, latency, model, the summary, and whether fewer messages were kept).

    `WindowGuard` checks the request actually sent, after recall injected its text.

    `plan_fold` is the whole decision, with no model call: the summarization replay runs it
    over recorded conversations."""

    def __init__(
        self,
        model: Any,
        *,
        trigger: Any,
        keep: Any,
        counter: WindowCounter,
        overhead_tokens: int,
        keep_budget_tokens: int,
        summary_reserve_tokens: int,
        events: EventSink | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model,
            trigger=trigger,
            keep=keep,
            token_counter=counter,  # type: ignore[arg-type]  # takes messages only
            **kwargs,
        )
        self.counter = counter
        self.window = counter.window
        self.overhead_tokens = overhead_tokens
        self.keep_budget_tokens = keep_budget_tokens
        self.summary_reserve_tokens = summary_reserve_tokens
        self.events = events
        token_limits = [
            int(self.window * float(value)) if kind == "fraction" else int(value)  # type: ignore[call-overload,arg-type]
            for clause in self._trigger_clauses
            for kind, value in clause.items()
            if kind in ("fraction", "tokens")
        ]
        # A messages-only trigger still may not let a request pass 75 % of the window.
        self.limit_tokens = max(1, min(token_limits, default=int(self.window * 0.75)))

    # The decision ------------------------------------------------------------------------------

    def request_tokens(self, messages: Sequence[AnyMessage]) -> int:
        return self.overhead_tokens + int(self.token_counter(list(messages)))

    def plan_fold(self, messages: list[AnyMessage]) -> FoldPlan | None:
        """The fold this request needs, or None (no trigger met, or nothing can be folded)."""
        total = self.request_tokens(messages)
        over_limit = total >= self.limit_tokens
        if not (self._should_summarize(messages, total) or over_limit):
            return None
        # Never fold the current exchange: the customer's latest message and what follows.
        floor = max((i for i, m in enumerate(messages) if _is_customer(m)), default=len(messages))
        cutoff = min(self._determine_cutoff_index(messages), floor)
        kept = int(self.token_counter(messages[cutoff:])) if cutoff > 0 else total
        reduced = False
        after = self.overhead_tokens + self.summary_reserve_tokens + kept
        if cutoff <= 0 or after >= self.limit_tokens:
            # Keeping `keep` messages would pass the trigger again: keep the most recent
            # messages that fit in the keep budget.
            budget_cut = self._fit_budget(messages, floor)
            if budget_cut > cutoff:
                cutoff, reduced = budget_cut, True
        if cutoff <= 0:
            return None
        kind, value = self.keep
        return FoldPlan(
            cutoff=cutoff,
            tokens_before=total,
            kept_tokens=int(self.token_counter(messages[cutoff:])),
            configured_keep=f"{kind}:{value}",
            reduced=reduced,
            limit_tokens=self.limit_tokens,
        )

    def _fit_budget(self, messages: list[AnyMessage], floor: int) -> int:
        """The earliest cutoff whose kept suffix fits the keep budget, at most `floor`, moved
        so that no tool result loses its call."""
        cut = floor
        for i in range(floor - 1, -1, -1):
            if int(self.token_counter(messages[i:])) > self.keep_budget_tokens:
                break
            cut = i
        return self._find_safe_cutoff_point(messages, cut) if cut < len(messages) else cut

    # The fold ----------------------------------------------------------------------------------

    # LangChain folds in a `before_model` hook, which is one more step of the graph in every
    # turn (its checkpoint, its task, its thread), for a fold that happens once in many turns.
    # Here the fold runs inside the model call instead (`wrap_model_call`), and the folded
    # conversation reaches the state as the call's own update; the hook is switched off.
    before_model = AgentMiddleware.before_model  # type: ignore[assignment]
    abefore_model = AgentMiddleware.abefore_model  # type: ignore[assignment]

    def fold(self, messages: list[AnyMessage]) -> list[AnyMessage] | None:
        """The conversation after this request's fold (the summary, then the kept messages),
        recorded as a `summarization` event; None when it needs no fold."""
        self._ensure_message_ids(messages)
        plan = self.plan_fold(messages)
        if plan is None:
            return None
        started = time.perf_counter()
        folded, preserved = self._partition_messages(messages, plan.cutoff)
        summary = self._build_new_messages(self._create_summary(folded))
        latency_ms = (time.perf_counter() - started) * 1000
        kept = [*summary, *preserved]
        emit(
            self.events,
            "summarization",
            "summarize",
            latency_ms,
            model=str(getattr(self.model, "model_name", None) or type(self.model).__name__),
            tokens_before=plan.tokens_before,
            tokens_after=self.request_tokens(kept),
            messages_folded=len(folded),
            detail=SummarizationDetail(
                summary=str(summary[0].text)[:4000],
                kept_messages=len(preserved),
                configured_keep=plan.configured_keep,
                keep_reduced=plan.reduced,
                trigger_tokens=plan.limit_tokens,
                window=self.window,
                counted_by=self.counter.method,
            ),
        )
        return kept

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse | ExtendedModelResponse:
        kept = self.fold(request.messages)
        if kept is None:
            return handler(request)
        response = handler(request.override(messages=kept))
        # The node adds the answer to the state first; this update then replaces the whole
        # conversation by the folded one, the answer included.
        return ExtendedModelResponse(
            model_response=response,
            command=Command(
                update={"messages": [RemoveMessage(id=REMOVE_ALL), *kept, *response.result]}
            ),
        )


class WindowGuard(AgentMiddleware):  # type: ignore[type-arg]
    """Around the request actually sent (after recall injected its text): refuse it when it
    does not fit the window, recorded as a `context_guard` event; ask once more when the model
    answers with neither text nor a tool call, then refuse."""

    def __init__(self, counter: WindowCounter, *, events: EventSink | None = None) -> None:
        super().__init__()
        self.counter = counter
        self.window = counter.window
        self.events = events

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> ModelResponse:
        sent = [*([request.system_message] if request.system_message else []), *request.messages]
        tokens = int(self.counter(sent))
        if tokens > self.window:
            emit(
                self.events,
                "context_guard",
                "overflow",
                0.0,
                status="error",
                error="request larger than the input window",
                tokens_before=tokens,
                detail=WindowDetail(window=self.window, counted_by=self.counter.method),
            )
            raise ContextWindowExceeded(
                f"The next request would be {tokens:,} tokens, more than the model's input "
                f"window of {self.window:,}, so it was not sent."
            )
        response = handler(request)
        if _answered(response):
            return response
        # An empty completion is not an answer: ask once more, then give up clearly.
        response = handler(request)
        if _answered(response):
            return response
        raise EmptyAnswer("the model returned an empty answer twice")


def _answered(response: ModelResponse) -> bool:
    answer = next((m for m in reversed(response.result) if isinstance(m, AIMessage)), None)
    return answer is not None and bool(str(answer.text).strip() or answer.tool_calls)
