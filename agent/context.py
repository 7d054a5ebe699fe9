"""Who is calling: one typed context for a chat turn, passed to the agent by the chat service.

`create_agent(context_schema=TurnContext)` and `agent.stream(..., context=TurnContext(...))`;
middleware, tools and telemetry read it through `current_turn()` (LangGraph's runtime), so the
caller's identity never travels as untyped config metadata and never comes from the model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TurnContext:
    """The customer, their conversation and the turn number of the running chat turn, and the
    warnings (budgets past a threshold, budgets not checked) the turn's answer carries back.

    It is the one identity of a turn: the service builds it, the agent's middleware and tools
    read it, embedding calls are recorded against it, and the outcome takes its warnings."""

    user_id: str
    session_id: str
    turn: int
    warnings: list[str] = field(default_factory=list, compare=False, hash=False, repr=False)

    def warn(self, *texts: str) -> None:
        """Add warnings for this turn's answer, each once."""
        self.warnings.extend(t for t in dict.fromkeys(texts) if t not in self.warnings)


def outside_turn() -> TurnContext:
    """What a record names when it is made outside a chat turn (a script, a direct call): a
    record must name a user, session and turn; this never reaches a tool's access check."""
    return TurnContext(user_id="unknown", session_id="unknown", turn=0)


_ON_BEHALF: ContextVar[TurnContext | None] = ContextVar("on_behalf_of", default=None)


@contextmanager
def on_behalf_of(context: TurnContext) -> Iterator[TurnContext]:
    """Model calls made outside an agent run but for one conversation (the outcome judge)
    are recorded against it, as a turn's calls are."""
    token = _ON_BEHALF.set(context)
    try:
        yield context
    finally:
        _ON_BEHALF.reset(token)


def current_turn() -> TurnContext | None:
    """The running turn's context (or the conversation `on_behalf_of` names), or None outside
    an agent run (scripts, direct calls)."""
    from langgraph.runtime import get_runtime

    try:
        context = get_runtime().context
    except (RuntimeError, KeyError, AttributeError):  # not inside a graph run
        return _ON_BEHALF.get()
    return context if isinstance(context, TurnContext) else _ON_BEHALF.get()
