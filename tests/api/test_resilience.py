"""Resilience and caching in the real OpenAI wire format: the real `openai` client (through
ChatOpenAI) against a local server that answers 429, 5xx, slow answers and dropped connections;
the response cache (in-process and Redis); cached input tokens priced at the cached rate."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agent.cache import ResponseCache, make_response_cache
from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase
from agent.models import ModelSpec, make_chat_model
from agent.runtime import assemble
from agent.service import ChatService, DependencyError
from agent.telemetry import CallTelemetry
from data.config.settings import load_settings
from data.store.conversations import transcript
from data.store.orm import ModelCall
from data.store.recorder import Recorder
from tests.helpers.fake_openai import FakeOpenAI, drop, error, replay, text
from tests.helpers.servers import REDIS_URL

Shared = tuple[Embedder, KnowledgeBase]
RECORDED = Path(__file__).resolve().parents[1] / "files" / "openai_stream_cached_tokens.sse"


@pytest.fixture
def shared(shared_embedder: Embedder, shared_knowledge: KnowledgeBase) -> Shared:
    return shared_embedder, shared_knowledge


def build(
    engine: Engine,
    tmp_path: Path,
    api: FakeOpenAI,
    shared: Shared,
    *,
    retries: int = 2,
    fallback: str | None = None,
    timeout_s: float = 10.0,
    cache: ResponseCache | None = None,
) -> ChatService:
    """The app's agent (memory, middleware, recording) around a real ChatOpenAI on `api`."""
    settings = load_settings(data_dir=tmp_path / "data", metrics_port=0, model_max_retries=retries)
    recorder = Recorder(engine)

    def model(name: str, purpose: str = "chat"):  # type: ignore[no-untyped-def]
        spec = ModelSpec(
            provider="openai-compatible",
            model=name,
            base_url=api.url,
            context_window=128_000,
            max_tokens=256,
            timeout_s=timeout_s,
        )
        telemetry = CallTelemetry(spec=spec, purpose=purpose, sink=recorder)
        # As the app builds it: the client does not retry, ModelRetryMiddleware does.
        return make_chat_model(
            spec,
            settings=settings,
            purpose=purpose,
            callbacks=[telemetry],
            cache=cache,
            max_retries=0,
        )

    agent = assemble(
        settings,
        engine=engine,
        chat_model=model("gpt-4o-mini"),
        summary_model=model("gpt-4o-mini", "summarize"),
        fallback_model=model(fallback) if fallback else None,
        sink=recorder,
        retry_initial_delay_s=0.01,
        checkpointer=InMemorySaver(),
        embedder=shared[0],
        knowledge=shared[1],
    )
    return ChatService(agent=agent.agent, engine=engine, model_label=f"gpt-4o-mini at {api.url}")


def calls(engine: Engine, session_id: str) -> list[ModelCall]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(ModelCall)
                .where(ModelCall.session_id == session_id, ModelCall.purpose != "embedding")
                .order_by(ModelCall.id)
            )
        )


def test_transient_failures_are_retried_and_every_attempt_recorded(
    engine: Engine, tmp_path: Path, shared: Shared
) -> None:
    replies = [error(429, retry_after=0), error(503), drop(), text("Your order shipped.")]
    with FakeOpenAI(replies) as api:
        service = build(engine, tmp_path, api, shared, retries=3)
        outcome = service.run_turn(user_id="u1", session_id="s-retry", message="Where is it?")
    assert outcome.text == "Your order shipped."
    assert len(api.requests) == 4
    # An OpenAI-compatible server gets the answer cap as max_tokens (llama.cpp, vLLM, Ollama
    # read that one), not only as OpenAI's max_completion_tokens.
    assert api.bodies[-1]["max_tokens"] == 256
    rows = calls(engine, "s-retry")
    assert [r.status for r in rows] == ["error", "error", "error", "ok"]
    assert "429" in str(rows[0].error) and "503" in str(rows[1].error)
    assert "Connection" in str(rows[2].error)
    assert rows[3].cost_status == "computed" and rows[3].cost_usd and rows[3].cost_usd > 0


def test_a_timeout_is_retried(engine: Engine, tmp_path: Path, shared: Shared) -> None:
    with FakeOpenAI([text("too late", delay=1.5), text("On time.")]) as api:
        service = build(engine, tmp_path, api, shared, retries=1, timeout_s=0.4)
        outcome = service.run_turn(user_id="u1", session_id="s-timeout", message="Hello")
    assert outcome.text == "On time."
    assert [r.status for r in calls(engine, "s-timeout")] == ["error", "ok"]


def test_the_fallback_model_answers_once_retries_are_used_up(
    engine: Engine, tmp_path: Path, shared: Shared
) -> None:
    with FakeOpenAI([error(500), error(502), text("From the fallback.")]) as api:
        service = build(engine, tmp_path, api, shared, retries=1, fallback="gpt-4.1-mini")
        outcome = service.run_turn(user_id="u1", session_id="s-fallback", message="Hello")
    assert outcome.text == "From the fallback."
    assert [b["model"] for b in api.bodies] == ["gpt-4o-mini", "gpt-4o-mini", "gpt-4.1-mini"]
    rows = calls(engine, "s-fallback")
    assert [(r.model, r.status) for r in rows] == [
        ("gpt-4o-mini", "error"),
        ("gpt-4o-mini", "error"),
        ("gpt-4.1-mini", "ok"),
    ]


def test_exhausted_retries_give_one_clear_message_and_keep_the_message(
    engine: Engine, tmp_path: Path, shared: Shared
) -> None:
    with FakeOpenAI(default=error(503)) as api:
        service = build(engine, tmp_path, api, shared, retries=2)
        with pytest.raises(DependencyError) as raised:
            service.run_turn(user_id="u1", session_id="s-down", message="Is anyone there?")
    message = str(raised.value)
    assert "HTTP 503" in message and "gpt-4o-mini" in message and "\n" not in message
    assert len(api.requests) == 3, "one call and two retries, then stop"
    assert [r.status for r in calls(engine, "s-down")] == ["error"] * 3
    saved = transcript(engine=engine, session_id="s-down")
    assert [(m.role, m.content) for m in saved] == [("user", "Is anyone there?")]


@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_not_retried(
    engine: Engine, tmp_path: Path, shared: Shared, status: int
) -> None:
    with FakeOpenAI(default=error(status)) as api:
        service = build(engine, tmp_path, api, shared, retries=3)
        with pytest.raises(DependencyError, match=f"HTTP {status}"):
            service.run_turn(user_id="u1", session_id=f"s-{status}", message="Hello")
    assert len(api.requests) == 1


def test_cached_input_tokens_are_priced_at_the_cached_rate(
    engine: Engine, tmp_path: Path, shared: Shared
) -> None:
    """A recorded OpenAI stream whose usage has prompt_tokens_details.cached_tokens."""
    with FakeOpenAI([replay(RECORDED)]) as api:
        service = build(engine, tmp_path, api, shared)
        outcome = service.run_turn(user_id="u1", session_id="s-cached", message="Status?")
    assert outcome.text == "Your order A-10234 shipped yesterday with UPS."
    (row,) = calls(engine, "s-cached")
    assert (row.input_tokens, row.cached_input_tokens, row.output_tokens) == (2006, 1920, 12)
    # gpt-4o-mini's published prices per million tokens: $0.15 input, $0.075 cached input,
    # $0.60 output. Billing the cached tokens at the full rate would give $0.0003081.
    expected = ((2006 - 1920) * 0.15 + 1920 * 0.075 + 12 * 0.60) / 1_000_000
    assert row.cost_usd == pytest.approx(expected, rel=1e-9)
    assert row.cost_status == "computed"


@pytest.fixture(params=["in-process", "redis"])
def response_cache(request: pytest.FixtureRequest) -> Iterator[ResponseCache]:
    if request.param == "in-process":
        yield make_response_cache(ttl_s=60, redis_url=None)
        return
    request.getfixturevalue("redis_client")  # the machine's Redis, or fail on CI
    cache = make_response_cache(ttl_s=60, redis_url=REDIS_URL)
    cache.clear()
    yield cache
    cache.clear()


def test_the_response_cache_answers_the_same_messages_at_no_cost(
    engine: Engine, tmp_path: Path, shared: Shared, response_cache: ResponseCache
) -> None:
    question = f"What are your opening hours? ({uuid.uuid4().hex[:6]})"
    with FakeOpenAI([text("We are open from 9 to 5.")]) as api:
        service = build(engine, tmp_path, api, shared, cache=response_cache)
        first = service.run_turn(user_id="u1", session_id="s-c1", message=question)
        second = service.run_turn(user_id="u2", session_id="s-c2", message=question)
        # Different messages are a miss (the server has no reply left: that would fail).
        api.script(text("Returns take 14 days."))
        third = service.run_turn(user_id="u3", session_id="s-c3", message="How do returns work?")
    assert first.text == second.text == "We are open from 9 to 5."
    assert third.text == "Returns take 14 days."
    assert len(api.requests) == 2, "the second identical request never reached the model"
    (miss,) = calls(engine, "s-c1")
    (hit,) = calls(engine, "s-c2")
    assert miss.cost_status == "computed" and miss.cost_usd and miss.cost_usd > 0
    assert (hit.cost_status, hit.cost_usd, hit.usage_source) == ("cache_hit", 0.0, "cache")
    assert hit.input_tokens == hit.output_tokens == 0
    assert hit.context_tokens == miss.input_tokens, "the request's size still counts"


def test_an_unreachable_redis_cache_is_a_miss_not_a_failure(
    engine: Engine, tmp_path: Path, shared: Shared
) -> None:
    cache = make_response_cache(ttl_s=60, redis_url="redis://127.0.0.1:1/0")
    with FakeOpenAI([text("Hello!"), text("Hello again!")]) as api:
        service = build(engine, tmp_path, api, shared, cache=cache)
        assert service.run_turn(user_id="u1", session_id="s-r1", message="Hi").text == "Hello!"
        again = service.run_turn(user_id="u2", session_id="s-r2", message="Hi").text
    assert again == "Hello again!"


def test_tools_in_the_app_agent_are_called_recorded_and_shown(
    engine: Engine, tmp_path: Path, shared: Shared
) -> None:
    """AGENT_TOOLS=on: the model's two tool calls of one turn run, are recorded, and are what
    the chat page lists under the answer (data.store.conversations.turn_events)."""
    from data.integrations import orders as order_data
    from data.store.conversations import turn_events
    from tests.helpers.fake_openai import ToolCall, tool_calls

    replies = [
        tool_calls(
            ToolCall("lookup_order", {"order_number": "A-99999"}),
            ToolCall("search_help_center", {"query": "how do returns work"}),
        ),
        text("Order A-99999 is not on your account; returns take 30 days."),
    ]
    settings = load_settings(
        data_dir=tmp_path / "data", metrics_port=0, agent_tools="on", model_max_retries=0
    )
    with FakeOpenAI(replies) as api:
        spec = ModelSpec(
            provider="openai-compatible",
            model="gpt-4o-mini",
            base_url=api.url,
            context_window=128_000,
            max_tokens=256,
            timeout_s=10,
        )
        model = make_chat_model(spec, settings=settings, purpose="chat", max_retries=0)
        parts = assemble(
            settings,
            engine=engine,
            chat_model=model,
            summary_model=model,
            checkpointer=InMemorySaver(),
            embedder=shared[0],
            knowledge=shared[1],
        )
        service = ChatService(agent=parts.agent, engine=engine, model_label="fake")
        outcome = service.run_turn(user_id="u9", session_id="s-tools", message="Return A-99999?")
    assert outcome.text.startswith("Order A-99999 is not on your account")
    sent = [t["function"]["name"] for t in api.bodies[0]["tools"]]
    assert {"lookup_order", "search_help_center", "open_ticket", "escalate_to_human"} <= set(sent)
    results = [m for m in api.bodies[1]["messages"] if m["role"] == "tool"]
    assert len(results) == 2
    assert order_data.get_order(engine=engine, user_id="u9", order_number="A-99999") is None
    shown = turn_events(engine=engine, session_id="s-tools")[outcome.turn]
    tools = {e.name: e for e in shown if e.kind == "tool_call"}
    assert set(tools) == {"lookup_order", "search_help_center"}
    assert tools["lookup_order"].detail["args"] == {"order_number": "A-99999"}
    assert [e.kind for e in shown].count("memory_recall") == 1
