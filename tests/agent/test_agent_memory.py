"""Long-term memory in the agent loop, on the real local embedder, with a scripted chat model so
the prompts can be read: recall into the prompt, facts kept across summarization, the events
the pages read, and memory that is unavailable. On both backends: embedded Qdrant beside SQLite,
and pgvector in the Postgres of the [postgres] runs (MEMORY_BACKEND=pgvector)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase
from agent.memory_pgvector import PgVectorStore
from agent.runtime import AgentParts, assemble
from agent.scripted import ScriptedChatModel
from agent.service import ChatService
from data.config.settings import load_settings
from data.store.orm import AgentEvent, ModelCall
from data.store.recorder import Recorder

PLANTED = {
    "name": "Dana Whitfield",
    "email": "dana.w@example.com",
    "order": "A-10234",
    "problem": "cracked screen",
    "promise": "replacement by Friday",
}
OPENING = [
    f"Hi, my name is {PLANTED['name']} and my e-mail is {PLANTED['email']}.",
    f"My order {PLANTED['order']} arrived with a {PLANTED['problem']}, which is annoying.",
]
FILLER = (
    "Another thing about my account settings and the newsletter preferences I keep getting, "
    "the layout of the mobile app, the colours of the emails and the delivery windows in "
    "general; none of it is urgent but I would like to understand how it works. "
)


def agent_reply(messages: list[BaseMessage]) -> AIMessage:
    last = next(m for m in reversed(messages) if isinstance(m, HumanMessage))
    # The customer's own words: injected facts come before "Customer: ".
    question = str(last.text).rsplit("Customer: ", 1)[-1]
    if PLANTED["problem"] in question:
        return AIMessage(f"I'm sorry about that. I will send you a {PLANTED['promise']}.")
    return AIMessage("Understood. " + "Here is how that works in detail. " * 8)


def prompt_text(messages: list[BaseMessage]) -> str:
    return "\n".join(str(m.text) for m in messages)


class Chat:
    """An agent assembled exactly as the app does, around scripted models."""

    def __init__(
        self,
        engine: Engine,
        data_dir: Path,
        *,
        window: int = 1_000,
        embedder: Embedder | None = None,
        knowledge: KnowledgeBase | None = None,
        backend: str | None = None,
    ) -> None:
        backend = backend or {"postgresql": "pgvector"}.get(engine.dialect.name, "qdrant")
        settings = load_settings(
            data_dir=data_dir,
            summary_keep_messages=4,
            memory_top_k=5,
            metrics_port=0,
            memory_backend=backend,
            database_url=engine.url.render_as_string(hide_password=False),
        )
        self.model = ScriptedChatModel(reply=agent_reply, window=window)
        # A lossy summarizer: whatever it folds, the planted facts are gone from the summary.
        self.summarizer = ScriptedChatModel(
            responses=[AIMessage("The customer asked several questions about the shop.")]
        )
        self.parts: AgentParts = assemble(
            settings,
            engine=engine,
            chat_model=self.model,
            summary_model=self.summarizer,
            checkpointer=InMemorySaver(),
            sink=Recorder(engine),
            embedder=embedder,
            knowledge=knowledge,
        )
        self.service = ChatService(agent=self.parts.agent, engine=engine, model_label="scripted")

    def say(self, user: str, session: str, text: str) -> str:
        return self.service.run_turn(user_id=user, session_id=session, message=text).text

    def close(self) -> None:
        assert self.parts.memory is not None
        self.parts.middleware.flush()
        self.parts.memory.close()
        if isinstance(self.parts.memory, PgVectorStore):  # the next test starts with none
            with self.parts.memory.engine.begin() as connection:
                self.parts.memory.table.drop(connection, checkfirst=True)


@pytest.fixture
def chat(
    engine: Engine, tmp_path: Path, shared_embedder: Embedder, shared_knowledge: KnowledgeBase
) -> Iterator[Chat]:
    chat = Chat(engine, tmp_path / "data", embedder=shared_embedder, knowledge=shared_knowledge)
    on_postgres = engine.dialect.name == "postgresql"
    assert isinstance(chat.parts.memory, PgVectorStore) == on_postgres, "both backends run"
    yield chat
    chat.close()


def event_rows(engine: Engine, kind: str) -> list[dict[str, object]]:
    table = AgentEvent.__table__
    with engine.connect() as connection:
        rows = connection.execute(
            select(table).where(table.c.kind == kind).order_by(table.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def run_conversation(chat: Chat, user: str, session: str, turns: int) -> None:
    for text in OPENING:
        chat.say(user, session, text)
    for i in range(turns):
        chat.say(user, session, f"Question {i}: {FILLER}")


def retention(prompt: str) -> float:
    return sum(fact in prompt for fact in PLANTED.values()) / len(PLANTED)


def test_facts_survive_two_summarizations(chat: Chat, engine: Engine) -> None:
    run_conversation(chat, "dana", "s-long", turns=12)
    chat.say("dana", "s-long", "Before I go, what happens next?")

    folds = event_rows(engine, "summarization")
    assert len(folds) >= 2, "the conversation must be summarized at least twice"
    for fold in folds:
        assert fold["tokens_before"] > fold["tokens_after"] > 0  # type: ignore[operator]
        assert fold["messages_folded"] and fold["latency_ms"] is not None
        assert "summary" in json.loads(str(fold["detail"]))

    final = chat.model.prompts[-1]
    # The conversation itself: everything but the system message and the question, which
    # carries the recalled memories (the embedded model's placement).
    conversation = prompt_text([m for m in final[:-1] if m.type != "system"])
    # The planted messages were folded away and the summary lost them ...
    assert not any(fact in conversation for fact in PLANTED.values())
    # ... and recall put every one of them back into the model's prompt.
    assert retention(prompt_text(final)) == 1.0


def test_without_memory_the_lossy_summary_keeps_nothing(chat: Chat, engine: Engine) -> None:
    """The control for the test above: the same conversation with memory switched off."""
    chat.parts.middleware.store = None
    run_conversation(chat, "dana", "s-control", turns=12)
    chat.say("dana", "s-control", "Before I go, what happens next?")
    assert len(event_rows(engine, "summarization")) >= 2
    assert retention(prompt_text(chat.model.prompts[-1])) == 0.0


def test_recall_across_sessions_is_batched_recorded_and_shown(chat: Chat, engine: Engine) -> None:
    chat.say("erin", "s-1", "My order B-5512 never arrived and I am worried.")
    chat.say("frank", "s-other", "My order C-9000 never arrived either.")
    chat.say("erin", "s-2", "Is there any news about my missing package B-5512?")

    # With the embedded model's settings the memories go next to the question.
    question = str(chat.model.prompts[-1][-1].text)
    assert question.endswith("Customer: Is there any news about my missing package B-5512?")
    assert "The customer's problem: “My order B-5512 never arrived" in question
    assert "C-9000" not in prompt_text(chat.model.prompts[-1]), "never another user's memory"

    recalls = event_rows(engine, "memory_recall")
    assert len(recalls) == 3, "one recall per turn"
    last = recalls[-1]
    assert last["session_id"] == "s-2" and last["status"] == "ok"
    assert last["hits"] and last["top_score"] and float(last["top_score"]) >= 0.7  # type: ignore[arg-type]
    detail = json.loads(str(last["detail"]))
    assert detail["queries"] == 2, "the message and its order number, in one batched recall"
    assert any("B-5512" in m["text"] for m in detail["memories"])
    # The first turn of a new user has nothing to recall.
    assert recalls[0]["hits"] == 0 and recalls[0]["top_score"] is None


def test_embedding_calls_are_recorded_as_model_calls(
    engine: Engine, tmp_path: Path, shared_knowledge: KnowledgeBase
) -> None:
    # The app's own embedder, recording into this test's database.
    chat = Chat(engine, tmp_path / "data", knowledge=shared_knowledge)
    chat.say("gina", "s-emb", "My order D-4242 is broken.")
    chat.say("gina", "s-emb", "Can you check D-4242 again?")
    chat.parts.middleware.flush()
    with Session(engine) as session:
        rows = session.scalars(
            select(ModelCall).where(ModelCall.session_id == "s-emb").order_by(ModelCall.id)
        ).all()
    assert rows, "embedding calls of a turn are model calls"
    assert {r.purpose for r in rows} == {"embedding"}
    assert {r.turn for r in rows} == {1, 2}
    assert all(r.input_tokens > 0 and r.user_id == "gina" for r in rows)
    assert all(r.cost_status != "unknown" for r in rows), "the local embedder is priced ($0)"
    chat.close()


def test_memory_unavailable_keeps_the_agent_answering(
    engine: Engine, tmp_path: Path, shared_embedder: Embedder, shared_knowledge: KnowledgeBase
) -> None:
    """A second process on the same embedded storage cannot open it: the agent runs without
    memory, says why, and still answers."""
    shared = {"embedder": shared_embedder, "knowledge": shared_knowledge, "backend": "qdrant"}
    first = Chat(engine, tmp_path / "shared", **shared)  # type: ignore[arg-type]
    try:
        second = Chat(engine, tmp_path / "shared", **shared)  # type: ignore[arg-type]
        assert second.parts.memory is None
        assert second.parts.memory_error and re.search("qdrant", second.parts.memory_error, re.I)
        assert second.say("hank", "s-x", "My order E-1000 is late.").startswith("Understood")
    finally:
        first.close()


def test_an_identifier_alone_recalls_its_fact_exactly(chat: Chat, engine: Engine) -> None:
    """A bare order number says little by meaning; its key finds the stored fact anyway."""
    chat.say("ivan", "s-a", "My order Z-4411 arrived with a cracked screen.")
    chat.say("ivan", "s-b", "z-4411")
    question = str(chat.model.prompts[-1][-1].text)
    assert "“My order Z-4411 arrived with a cracked screen.”" in question
    detail = json.loads(str(event_rows(engine, "memory_recall")[-1]["detail"]))
    assert any(m["score"] == 1.0 and "Z-4411" in m["text"] for m in detail["memories"])
