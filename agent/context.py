"""Who is calling: one typed context for a chat turn, passed to the agent by the chat service.

`create_agent(context_schema=TurnContext)` and `agent.stream(..., context=TurnContext(...))`;
middleware, tools and telemetry read it through `current_turn()` (LangGraph's runtime), so the
caller's identity never travels as untyped config metadata and never comes from the model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TurnContext:
    """The customer, their conversation and the turn number of the running chat turn."""

    user_id: str
    session_id: str
    turn: int


UNKNOWN = TurnContext(user_id="unknown", session_id="unknown", turn=0)


def current_turn() -> TurnContext | None:
    """The running turn's context, or None outside an agent run (scripts, direct calls)."""
    from langgraph.runtime import get_runtime

    try:
        context = get_runtime().context
    except (RuntimeError, KeyError, AttributeError):  # not inside a graph run
        return None
    return context if isinstance(context, TurnContext) else None
