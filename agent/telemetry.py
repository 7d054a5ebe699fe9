"""Telemetry for every model call: latency, time to first token, usage, cost and context %.

A LangChain callback handler attached to each model by the factory, not an agent middleware:
the middleware that wraps the chat model's calls never sees the summarizer's call (the fold makes
it outside them), while a model's own callbacks see every call it makes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk, LLMResult

from agent.context import TurnContext, current_turn, outside_turn
from agent.models import ModelSpec
from data.integrations.prices import Rate, price_call
from data.store.orm import utcnow
from data.store.records import CallRecord

log = logging.getLogger(__name__)

Sink = Callable[[CallRecord], None]
# (messages as (role, text) pairs, completion text) -> (input tokens, output tokens)
UsageCounter = Callable[[list[tuple[str, str]], str], tuple[int, int]]

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


@dataclass
class _Open:
    start: float
    ts: datetime
    metadata: dict[str, Any]
    messages: list[tuple[str, str]]
    turn: TurnContext
    first_token: float | None = None
    chunks: list[str] = field(default_factory=list)


class CallTelemetry(BaseCallbackHandler):
    """Measures each call of one model and hands a CallRecord to `sink`."""

    raise_error = False  # telemetry must never break a chat turn

    def __init__(
        self,
        *,
        spec: ModelSpec,
        purpose: str,
        sink: Sink,
        price_overrides: dict[str, Rate] | None = None,
        usage_counter: UsageCounter | None = None,
    ) -> None:
        self.spec = spec
        self.purpose = purpose
        self.sink = sink
        self.price_overrides = price_overrides
        self.usage_counter = usage_counter
        self._open: dict[UUID, _Open] = {}
        self._lock = threading.Lock()

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        pairs = [
            (_ROLES.get(m.type, m.type), str(m.text)) for m in (messages[0] if messages else [])
        ]
        with self._lock:
            self._open[run_id] = _Open(
                start=time.perf_counter(),
                ts=utcnow(),
                metadata=dict(metadata or {}),
                messages=pairs,
                # Read here, on the calling thread, where the run's context is current.
                turn=current_turn() or outside_turn(),
            )

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        call = self._open.get(run_id)
        if call is not None and token:
            if call.first_token is None:
                call.first_token = time.perf_counter()
            call.chunks.append(token if isinstance(token, str) else str(token))

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            call = self._open.pop(run_id, None)
        if call is None:
            return
        end = time.perf_counter()
        message = _first_message(response)
        usage = message.usage_metadata if message is not None else None
        text = message.text if message is not None else "".join(call.chunks)
        answered = bool(str(text).strip()) or bool(message is not None and message.tool_calls)
        source = "provider"
        if usage is not None and "total_cost" in usage:
            # LangChain's cache hook answered (it zeroes total_cost on a hit): no provider call,
            # no tokens billed. The request's size still counts for context %.
            context = int(usage.get("input_tokens", 0) or 0)
            self._emit(
                call,
                run_id=run_id,
                latency_ms=(end - call.start) * 1000,
                ttft_ms=None,
                input_tokens=0,
                cached=0,
                output_tokens=0,
                source="cache",
                cost=0.0,
                cost_status="cache_hit",
                status="ok",
                error=None,
                context_tokens=context,
            )
            return
        if usage and usage.get("input_tokens"):
            input_tokens = int(usage.get("input_tokens", 0))
            output_tokens = int(usage.get("output_tokens", 0))
            cached = int((usage.get("input_token_details") or {}).get("cache_read", 0) or 0)
        elif self.usage_counter is not None:
            # The llama.cpp server reports no usage when streaming; count with its tokenizer.
            try:
                input_tokens, output_tokens = self.usage_counter(call.messages, text)
                cached, source = 0, "counted"
            except Exception as error:
                # The call happened and is recorded whatever the count does: an exception here
                # would end this callback before _emit, and the turn would have no call row.
                log.warning("could not count the tokens of a call: %s", error)
                input_tokens = output_tokens = cached = 0
                source = "missing"
        else:
            input_tokens = output_tokens = cached = 0
            source = "missing"
        provided = _provided_cost(message)
        cost: float | None
        if provided is not None:
            cost, cost_status = provided, "provided"
        else:
            price = price_call(
                provider=self.spec.provider,
                model=self.spec.model,
                input_tokens=input_tokens,
                cached_input_tokens=cached,
                output_tokens=output_tokens,
                overrides=self.price_overrides,
            )
            cost, cost_status = price.cost_usd, price.status
        self._emit(
            call,
            run_id=run_id,
            latency_ms=(end - call.start) * 1000,
            ttft_ms=None if call.first_token is None else (call.first_token - call.start) * 1000,
            input_tokens=input_tokens,
            cached=cached,
            output_tokens=output_tokens,
            source=source,
            cost=cost,
            cost_status=cost_status,
            # An empty completion is not an answer: recorded as failed, with the reason.
            status="ok" if answered else "error",
            error=None if answered else "empty completion: the model returned no text",
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            call = self._open.pop(run_id, None)
        if call is None:
            return
        price = price_call(
            provider=self.spec.provider,
            model=self.spec.model,
            input_tokens=0,
            cached_input_tokens=0,
            output_tokens=0,
            overrides=self.price_overrides,
        )
        self._emit(
            call,
            run_id=run_id,
            latency_ms=(time.perf_counter() - call.start) * 1000,
            ttft_ms=None,
            input_tokens=0,
            cached=0,
            output_tokens=0,
            source="missing",
            cost=price.cost_usd,
            cost_status=price.status,
            status="error",
            error=f"{type(error).__name__}: {error}"[:1000],
        )

    def _emit(
        self,
        call: _Open,
        *,
        run_id: UUID,
        latency_ms: float,
        ttft_ms: float | None,
        input_tokens: int,
        cached: int,
        output_tokens: int,
        source: str,
        cost: float | None,
        cost_status: str,
        status: str,
        error: str | None,
        context_tokens: int | None = None,
    ) -> None:
        meta = call.metadata
        purpose = "summarize" if meta.get("lc_source") == "summarization" else self.purpose
        record = CallRecord(
            ts=call.ts,
            user_id=call.turn.user_id,
            session_id=call.turn.session_id,
            turn=call.turn.turn,
            purpose=purpose,
            provider=self.spec.provider,
            model=self.spec.model,
            input_tokens=input_tokens,
            cached_input_tokens=cached,
            output_tokens=output_tokens,
            usage_source=source,
            cost_usd=cost,
            cost_status=cost_status,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            context_tokens=input_tokens if context_tokens is None else context_tokens,
            context_window=self.spec.context_window,
            status=status,
            error=error,
            run_id=str(run_id),
        )
        try:
            self.sink(record)
        except Exception:  # the turn goes on; the failure is in the log with its cause
            log.exception("could not record a %s call of %s", purpose, self.spec.model)


def _first_message(response: LLMResult) -> AIMessage | None:
    for generations in response.generations:
        for generation in generations:
            message = getattr(generation, "message", None)
            if isinstance(message, AIMessage):
                return message
    return None


def _provided_cost(message: AIMessage | None) -> float | None:
    """Some OpenAI-compatible gateways (OpenRouter, LiteLLM) report the charged cost."""
    if message is None:
        return None
    usage = (message.response_metadata or {}).get("token_usage") or {}
    cost = usage.get("cost") if isinstance(usage, dict) else None
    return float(cost) if isinstance(cost, int | float) else None
