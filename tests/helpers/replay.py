"""Recorded sessions for the summarization replay, and their settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage
from langgraph.checkpoint.memory import InMemorySaver
from sqlalchemy import Engine

from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase
from agent.models import ModelSpec
from agent.runtime import assemble
from agent.scripted import ScriptedChatModel
from agent.service import ChatService
from agent.telemetry import CallTelemetry
from data.analytics.filters import Filters
from data.config.settings import load_settings
from data.store.recorder import Recorder

TRIGGER, KEEP = 0.75, 6

WINDOW = 4_000


SESSIONS = 3


TURNS = 26


QUESTIONS = (
    "Hello, I have a question about returning a jacket that does not fit me well.",
    "It is too small around the shoulders and the sleeves are short.",
    "Can I exchange it for a larger size instead of getting a refund for it?",
    "How long would the exchange take if I send it back this week by post?",
    "Do I need to print a label myself, or will you send one to me by e-mail?",
    "Thanks. And what if the larger size is out of stock when it arrives?",
)


def spec(window: int) -> ModelSpec:
    return ModelSpec(
        provider="openai",
        model="gpt-4o-mini",
        base_url=None,
        context_window=window,
        max_tokens=64,
        timeout_s=10,
    )


def answer(messages: list[BaseMessage]) -> AIMessage:
    """Answers of different lengths, so the context grows unevenly."""
    words = 40 + (len(messages) * 7) % 43
    return AIMessage(" ".join(["Sure, happy to help with that."] + ["detail"] * words))


def summary(messages: list[BaseMessage]) -> AIMessage:
    return AIMessage("Summary: the customer wants to exchange a jacket for a larger size.")


def record_sessions(
    engine: Engine, tmp_path: Path, embedder: Embedder, knowledge: KnowledgeBase
) -> list[str]:
    """Chat with the app's agent (scripted models, real middleware, real recording)."""
    settings = load_settings(
        data_dir=tmp_path / "data",
        metrics_port=0,
        summary_trigger_fraction=TRIGGER,
        summary_keep_messages=KEEP,
    )
    recorder = Recorder(engine)
    chat = ScriptedChatModel(
        window=WINDOW,
        reply=answer,
        callbacks=[CallTelemetry(spec=spec(WINDOW), purpose="chat", sink=recorder)],
    )
    summarizer = ScriptedChatModel(
        window=WINDOW,
        reply=summary,
        callbacks=[CallTelemetry(spec=spec(WINDOW), purpose="summarize", sink=recorder)],
    )
    parts = assemble(
        settings,
        engine=engine,
        chat_model=chat,
        summary_model=summarizer,
        sink=recorder,
        checkpointer=InMemorySaver(),
        embedder=embedder,
        knowledge=knowledge,
    )
    service = ChatService(agent=parts.agent, engine=engine, model_label="scripted")
    sessions = [f"replay-{i}" for i in range(SESSIONS)]
    for index, session_id in enumerate(sessions):
        for turn in range(TURNS + 2 * index):
            question = QUESTIONS[(turn + index) % len(QUESTIONS)]
            service.run_turn(user_id=f"r{index}", session_id=session_id, message=question)
    return sessions


def everything() -> Filters:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return Filters(start=now - timedelta(days=2), end=now + timedelta(hours=2))
