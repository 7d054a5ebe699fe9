"""Builds the support agent: `create_agent` with LangChain's middleware and ours.

Order matters. `before_model` hooks run first to last, `wrap_model_call` wraps outermost first:
- memory and context injection (recall before each model call, facts stored after it),
- summarization, recorded as an event, folds old messages once the request passes the trigger,
- fallback wraps retry, so the fallback model is retried too,
- tool telemetry times every tool call."""

from __future__ import annotations

from collections.abc import Sequence

from langchain.agents import create_agent
from langchain.agents.middleware import (
    AgentMiddleware,
    ModelFallbackMiddleware,
    ModelRetryMiddleware,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from agent.middleware import EventSink, RecordedSummarization, is_transient
from agent.prompts import SYSTEM_PROMPT


def build_agent(
    *,
    chat_model: BaseChatModel,
    summary_model: BaseChatModel,
    checkpointer: BaseCheckpointSaver[str] | None,
    trigger_fraction: float = 0.75,
    keep_messages: int = 50,
    tools: Sequence[BaseTool] = (),
    fallback_model: BaseChatModel | None = None,
    max_retries: int = 2,
    retry_initial_delay_s: float = 1.0,
    before: Sequence[AgentMiddleware] = (),  # type: ignore[type-arg]
    after: Sequence[AgentMiddleware] = (),  # type: ignore[type-arg]
    events: EventSink | None = None,
) -> CompiledStateGraph:  # type: ignore[type-arg]
    """The agent. `before` middleware runs ahead of summarization (memory, context injection);
    `after` goes innermost (tool telemetry). Tools are bound only when given: the embedded
    model cannot call them."""
    middleware: list[AgentMiddleware] = [*before]  # type: ignore[type-arg]
    middleware.append(
        RecordedSummarization(
            chat_model,
            trigger=("fraction", trigger_fraction),
            keep=("messages", keep_messages),
            summarizer=summary_model,
            events=events,
        )
    )
    if fallback_model is not None:
        middleware.append(ModelFallbackMiddleware(fallback_model))
    if max_retries > 0:
        middleware.append(
            ModelRetryMiddleware(
                max_retries=max_retries,
                retry_on=is_transient,
                on_failure="error",
                initial_delay=retry_initial_delay_s,
                backoff_factor=2.0,
                max_delay=20.0,
            )
        )
    middleware.extend(after)
    return create_agent(
        chat_model,
        tools=list(tools),
        system_prompt=SYSTEM_PROMPT,
        middleware=middleware,
        checkpointer=checkpointer,
        name="support_agent",
    )
