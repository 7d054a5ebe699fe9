"""A chat service with budgets around a scripted model, and the budget rows it writes."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from sqlalchemy import Engine

from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase
from agent.ledger import TurnLedger
from agent.models import ModelSpec
from agent.runtime import assemble, make_ledger
from agent.scripted import ScriptedChatModel
from agent.service import ChatService
from agent.telemetry import CallTelemetry
from data.config.settings import load_settings
from data.integrations.prices import price_call

SPEC = ModelSpec(
    provider="openai",
    model="gpt-4o-mini",
    base_url=None,
    context_window=128_000,
    max_tokens=512,
    timeout_s=10,
)


def call_row(user: str, ts: datetime, cost: float | None, purpose: str = "chat") -> dict[str, Any]:
    return dict(
        ts=ts,
        user_id=user,
        session_id=f"s-{user}",
        turn=1,
        purpose=purpose,
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=100,
        cached_input_tokens=0,
        output_tokens=10,
        usage_source="provider",
        cost_usd=cost,
        cost_status="computed" if cost is not None else "unknown",
        latency_ms=100.0,
        ttft_ms=None,
        context_tokens=100,
        context_window=128_000,
        status="ok",
    )


def build_service(
    engine: Engine,
    tmp_path: Path,
    embedder: Embedder,
    knowledge: KnowledgeBase,
    *,
    warm: bool = False,
    ledger: TurnLedger | None = None,
) -> tuple[ChatService, ScriptedChatModel]:
    """The app's agent around a scripted model whose calls are recorded and priced as
    gpt-4o-mini (the real telemetry, and the app's ledger: a turn's rows are written at its
    end). `warm`: the service starts embedding each message before the agent runs, as the
    app's does."""
    settings = load_settings(data_dir=tmp_path / "data", metrics_port=0)
    ledger = ledger or make_ledger(engine)
    model = ScriptedChatModel(
        responses=[AIMessage("Happy to help.")],
        callbacks=[CallTelemetry(spec=SPEC, purpose="chat", sink=ledger.call)],
    )
    parts = assemble(
        settings,
        engine=engine,
        chat_model=model,
        summary_model=model,
        ledger=ledger,
        checkpointer=InMemorySaver(),
        embedder=embedder,
        knowledge=knowledge,
        budget_estimate=lambda n: (
            price_call(
                provider="openai",
                model="gpt-4o-mini",
                input_tokens=n,
                cached_input_tokens=0,
                output_tokens=SPEC.max_tokens,
            ).cost_usd
            or 0.0
        ),
    )
    service = ChatService(
        agent=parts.agent,
        engine=engine,
        model_label="scripted",
        ledger=ledger,
        warm=parts.middleware.warm if warm else None,
    )
    return service, model
