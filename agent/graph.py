"""Builds the support agent: `create_agent` with summarization middleware."""

from __future__ import annotations

from langchain.agents import create_agent
from langchain.agents.middleware import SummarizationMiddleware
from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from agent.prompts import SYSTEM_PROMPT


def build_agent(
    *,
    chat_model: BaseChatModel,
    summary_model: BaseChatModel,
    checkpointer: BaseCheckpointSaver[str] | None,
    trigger_fraction: float = 0.75,
    keep_messages: int = 50,
) -> CompiledStateGraph:  # type: ignore[type-arg]
    """The agent. It has no tools yet: the embedded model cannot call them, and every answer
    must work without them."""
    summarization = SummarizationMiddleware(
        chat_model,
        trigger=("fraction", trigger_fraction),
        keep=("messages", keep_messages),
        summarizer=summary_model,
    )
    return create_agent(
        chat_model,
        tools=[],
        system_prompt=SYSTEM_PROMPT,
        middleware=[summarization],
        checkpointer=checkpointer,
        name="support_agent",
    )
