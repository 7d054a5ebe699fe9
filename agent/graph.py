"""Builds the support agent: `create_agent` with LangChain's middleware and ours.

Order matters. Everything runs inside the model call (`wrap_model_call`, outermost first), so
the graph has one step per model call instead of one per hook:
- budgets first: a refused call makes no model call at all,
- summarization, recorded as an event, folds old messages once the request passes the trigger,
- memory and context injection (recall before each model call, facts stored after it),
- the window guard checks the request actually sent and asks again after an empty answer,
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
from langchain_core.messages import SystemMessage
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from agent.context import TurnContext
from agent.middleware import EventSink, RecordedSummarization, WindowGuard, is_transient
from agent.prompts import SYSTEM_PROMPT
from agent.window import WindowCounter

# ContextSize: ("fraction", 0.75), ("tokens", 3000) or ("messages", 50)
ContextSize = tuple[str, float | int]


def build_agent(
    *,
    chat_model: BaseChatModel,
    summary_model: BaseChatModel,
    checkpointer: BaseCheckpointSaver[str] | None,
    trigger: Sequence[ContextSize] = (("fraction", 0.75),),
    keep: ContextSize = ("messages", 50),
    counter: WindowCounter | None = None,
    keep_budget_fraction: float = 0.4,
    summary_max_tokens: int = 512,
    summary_window: int | None = None,
    tools: Sequence[BaseTool] = (),
    fallback_model: BaseChatModel | None = None,
    max_retries: int = 2,
    retry_initial_delay_s: float = 1.0,
    outer: Sequence[AgentMiddleware] = (),  # type: ignore[type-arg]
    before: Sequence[AgentMiddleware] = (),  # type: ignore[type-arg]
    after: Sequence[AgentMiddleware] = (),  # type: ignore[type-arg]
    events: EventSink | None = None,
) -> CompiledStateGraph:  # type: ignore[type-arg]
    """The agent. `outer` middleware goes first (budgets), then summarization, then `before`
    (memory, context injection), the window guard, fallback and retry; `after` goes innermost
    (tool telemetry). Tools are bound only when given: the embedded
    model cannot call them.

    Summarization fires on any of `trigger` (OR); the request is counted by `counter` (the
    serving model's tokenizer when it has one) with the system prompt and a reserve for what
    recall injects (agent/window.py has the budgets)."""
    window = _window_of(chat_model)
    counter = counter or WindowCounter(window=window)
    overhead = counter([SystemMessage(SYSTEM_PROMPT)]) + counter.inject_tokens
    summary_window = summary_window or window
    middleware: list[AgentMiddleware] = [*outer]  # type: ignore[type-arg]
    middleware.append(
        RecordedSummarization(
            chat_model,
            trigger=list(trigger),
            keep=keep,
            counter=counter,
            overhead_tokens=overhead,
            keep_budget_tokens=int(window * keep_budget_fraction),
            summary_reserve_tokens=summary_max_tokens + 30,
            summarizer=summary_model,
            # What the summarizer reads of the folded messages: 60 % of its own window leaves
            # room for LangChain's summary prompt and the summary itself.
            trim_tokens_to_summarize=int(summary_window * 0.6),
            events=events,
        )
    )
    middleware.extend(before)
    middleware.append(WindowGuard(counter, events=events))
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
        context_schema=TurnContext,  # type: ignore[arg-type]
        name="support_agent",
    )


def _window_of(model: BaseChatModel) -> int:
    window = (getattr(model, "profile", None) or {}).get("max_input_tokens")
    if not isinstance(window, int):
        raise ValueError("the chat model needs a profile with max_input_tokens")
    return window
