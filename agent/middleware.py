"""Agent middleware of our own: summarization that records its events, and what to retry.

Everything here rides on LangChain's middleware (SummarizationMiddleware, ModelRetryMiddleware,
ModelFallbackMiddleware); this module adds only the measurements and the choices."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
from langchain.agents.middleware import SummarizationMiddleware
from langchain_core.messages import AnyMessage, RemoveMessage
from langgraph.config import get_config

from data.records import EventRecord

log = logging.getLogger(__name__)

EventSink = Callable[[EventRecord], None]


def turn_meta() -> tuple[str, str, int]:
    """(user_id, session_id, turn) of the running turn, from the run's config metadata."""
    try:
        meta = get_config().get("metadata") or {}
    except RuntimeError:  # outside a runnable context (direct calls in scripts)
        meta = {}
    return (
        str(meta.get("user_id", "unknown")),
        str(meta.get("session_id", meta.get("thread_id", "unknown"))),
        int(meta.get("turn", 0)),
    )


def emit(sink: EventSink | None, kind: str, name: str, latency_ms: float, **fields: Any) -> None:
    """Record one event of the running turn (user, session and turn from the run's metadata);
    a failure to record never fails the turn."""
    if sink is None:
        return
    user_id, session_id, turn = turn_meta()
    event = EventRecord(
        user_id=user_id,
        session_id=session_id,
        turn=turn,
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


class RecordedSummarization(SummarizationMiddleware):
    """SummarizationMiddleware that records each fold as a `summarization` agent event:
    the request's tokens before and after, the messages folded, the latency and the model.
    The summary text goes into the event's detail so the conversation viewer can show it."""

    def __init__(self, *args: Any, events: EventSink | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events = events

    def before_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        messages: list[AnyMessage] = state["messages"]
        started = time.perf_counter()
        update = super().before_model(state, runtime)
        if update is None:
            return None
        latency_ms = (time.perf_counter() - started) * 1000
        kept = [m for m in update["messages"] if not isinstance(m, RemoveMessage)]
        summary, preserved = kept[0], kept[1:]
        emit(
            self.events,
            "summarization",
            "summarize",
            latency_ms,
            model=str(getattr(self.model, "model_name", None) or type(self.model).__name__),
            tokens_before=int(self.token_counter(messages)),
            tokens_after=int(self.token_counter(kept)),
            messages_folded=len(messages) - len(preserved),
            detail=json.dumps({"summary": str(summary.text)[:4000]}),
        )
        return update
