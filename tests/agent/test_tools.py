"""The support tools on SQLite and Postgres: each tool on its own, inside the real agent loop
(parallel calls, failures, telemetry), and over the real OpenAI wire format."""

from __future__ import annotations

import inspect
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain.tools import ToolRuntime
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langchain_openai import ChatOpenAI
from langgraph._internal._constants import CONFIG_KEY_RUNTIME
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from sqlalchemy import Engine, create_engine, delete, insert, select

from agent.context import TurnContext
from agent.embedders import LocalEmbedder
from agent.knowledge import KnowledgeBase, load_entries
from agent.scripted import ScriptedChatModel
from agent.tools import (
    NO_CALLER,
    SEARCH_MIN_SCORE,
    ToolTelemetryMiddleware,
    help_context,
    make_tools,
    order_context,
)
from data.config.settings import load_settings
from data.integrations import orders
from data.integrations.orders import TableOrders
from data.store import demo, demo_support
from data.store.orm import AgentEvent
from data.store.orm_support import TICKET_PRIORITIES, Order, SupportTicket
from data.store.recorder import EventRecorder
from data.store.records import CallRecord
from tests.helpers.fake_openai import FakeOpenAI, Usage, drop, error, text, tool_call

NOW = datetime.now(UTC).replace(microsecond=0)
ALICE = {"user_id": "alice", "session_id": "s-alice", "turn": 3}


def _order(number: str, user: str, status: str, days_ago: float, **extra: Any) -> dict[str, Any]:
    items = [{"name": "Trail running shoes", "qty": 1, "unit_usd": 89.0}]
    return (
        dict(
            order_number=number,
            user_id=user,
            status=status,
            items=json.dumps(items),
            total_usd=89.0,
            placed_at=NOW - timedelta(days=days_ago),
            shipped_at=None,
            delivered_at=None,
            carrier=None,
            tracking_number=None,
            demo=True,
        )
        | extra
    )


ORDERS = [
    _order(
        "A-10001",
        "alice",
        "shipped",
        3,
        shipped_at=NOW - timedelta(days=2),
        carrier="UPS",
        tracking_number="1Z999AA10123456784",
    ),
    _order("A-10002", "alice", "paid", 0.5),
    _order(
        "A-10003",
        "alice",
        "delivered",
        20,
        shipped_at=NOW - timedelta(days=19),
        delivered_at=NOW - timedelta(days=16),
        carrier="FedEx",
        tracking_number="123456789012",
    ),
    _order("A-20001", "bob", "paid", 1),
]


@pytest.fixture(scope="session")
def embedding_calls() -> list[CallRecord]:
    """What the embedder records: the calls made for a chat turn (a `ref`)."""
    return []


@pytest.fixture(scope="session")
def knowledge(embedding_calls: list[CallRecord]) -> KnowledgeBase:
    """The shipped knowledge base on the real local embedder, embedded once per test run."""
    return KnowledgeBase(embedder=LocalEmbedder(sink=embedding_calls.append))


@pytest.fixture
def db(engine: Engine) -> Engine:
    """The engine with the orders above; the shared fixtures do not empty orders or tickets."""
    with engine.begin() as connection:
        connection.execute(delete(Order))
        connection.execute(delete(SupportTicket))
        connection.execute(insert(Order), ORDERS)
    return engine


@pytest.fixture
def tools(db: Engine, knowledge: KnowledgeBase) -> dict[str, BaseTool]:
    return {t.name: t for t in make_tools(engine=db, knowledge=knowledge)}


def _context(meta: dict[str, Any]) -> TurnContext:
    return TurnContext(
        user_id=str(meta.get("user_id", "")),
        session_id=str(meta.get("session_id", "")),
        turn=int(meta.get("turn", 0)),
    )


def run_tool(tool: BaseTool, metadata: dict[str, Any] | None = None, **args: Any) -> str:
    """Invoke a tool as the agent's tool node does: the run's TurnContext in its LangGraph
    runtime (the tools read the customer from there, never from their arguments)."""
    context = _context(ALICE if metadata is None else metadata)
    config: Any = {"configurable": {CONFIG_KEY_RUNTIME: Runtime(context=context)}}
    runtime = ToolRuntime(
        state={"messages": [HumanMessage("My shoes from A-10001 have not arrived.")]},
        context=context,
        config=config,
        stream_writer=lambda _: None,
        tool_call_id="call-1",
        store=None,
    )
    if "runtime" in inspect.signature(tool.func).parameters:  # type: ignore[attr-defined]
        args["runtime"] = runtime
    return str(tool.invoke(args, config=config))


def tickets(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(SupportTicket).order_by(SupportTicket.id)).all())


def events(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(AgentEvent).order_by(AgentEvent.id)).all())


# -- each tool ------------------------------------------------------------------------------


def test_lookup_order_finds_only_the_users_own_orders(tools: dict[str, BaseTool]) -> None:
    lookup = tools["lookup_order"]
    found = run_tool(lookup, order_number="A-10001")
    assert found.startswith("Order A-10001: status shipped")
    assert "1 x Trail running shoes ($89.00); total $89.00" in found
    assert f"Shipped: {NOW - timedelta(days=2):%Y-%m-%d} with UPS" in found
    assert "tracking number 1Z999AA10123456784" in found and "Delivered" not in found
    # Customers type order numbers loosely.
    assert run_tool(lookup, order_number=" #a10001 ") == found
    # Bob's order exists, but for Alice it does not, exactly like a number nobody has.
    other = run_tool(lookup, order_number="A-20001")
    missing = run_tool(lookup, order_number="A-99999")
    assert other.startswith("No order A-20001 was found for this customer")
    assert other.replace("20001", "99999") == missing
    assert run_tool(lookup, {"user_id": "bob"}, order_number="A-20001").startswith(
        "Order A-20001: status paid"
    )


@pytest.mark.parametrize("bad", ["12345", "A-123", "my order", "A-10001; DROP TABLE orders", ""])
def test_lookup_order_explains_a_bad_order_number(tools: dict[str, BaseTool], bad: str) -> None:
    answer = run_tool(tools["lookup_order"], order_number=bad)
    assert answer.startswith(f"{bad!r} is not an order number. Order numbers look like A-10234")


def test_tools_refuse_without_a_user(tools: dict[str, BaseTool], db: Engine) -> None:
    for name, args in (
        ("lookup_order", {"order_number": "A-10001"}),
        ("list_recent_orders", {}),
        ("open_ticket", {"subject": "x", "details": "y"}),
        ("escalate_to_human", {"reason": "z"}),
    ):
        assert run_tool(tools[name], {"session_id": "s"}, **args) == NO_CALLER
    assert tickets(db) == []


def test_list_recent_orders(tools: dict[str, BaseTool]) -> None:
    listed = run_tool(tools["list_recent_orders"]).splitlines()
    assert [line.split(":")[0] for line in listed] == ["A-10002", "A-10001", "A-10003"]
    assert listed[0] == (
        f"A-10002: paid, placed {NOW - timedelta(days=0.5):%Y-%m-%d}, $89.00, Trail running shoes"
    )
    assert run_tool(tools["list_recent_orders"], {"user_id": "carol"}) == (
        "This customer has no orders."
    )


def test_recent_orders_are_limited_and_newest_first(db: Engine) -> None:
    more = [_order(f"A-3{i:04d}", "dave", "paid", i) for i in range(8)]
    with db.begin() as connection:
        connection.execute(insert(Order), more)
    got = orders.recent_orders(engine=db, user_id="dave", limit=5)
    assert [o.order_number for o in got] == [f"A-3{i:04d}" for i in range(5)]


def test_search_help_center(tools: dict[str, BaseTool], embedding_calls: list[CallRecord]) -> None:
    search = tools["search_help_center"]
    embedding_calls.clear()
    found = run_tool(search, query="how long until I get my money back after returning?")
    # The query's embedding is recorded against the turn, like every model call.
    [embedding] = embedding_calls
    assert (embedding.purpose, embedding.user_id, embedding.session_id, embedding.turn) == (
        "embedding",
        "alice",
        "s-alice",
        3,
    )
    assert found.startswith("## How long does a refund take?\n")
    assert "5 to 10 working days" in found
    assert run_tool(search, query="Write me a poem about cats").startswith(
        "The help center has no article about this."
    )
    assert run_tool(search, query="  ") == "The query is empty: pass the customer's question."


def test_open_ticket_and_escalate(tools: dict[str, BaseTool], db: Engine) -> None:
    opened = run_tool(
        tools["open_ticket"],
        subject="Parcel A-10001 late",
        details="Shipped 2 days ago, tracking has not moved.",
        priority="high",
    )
    escalated = run_tool(tools["escalate_to_human"], reason="The customer asks for a person.")
    first, second = tickets(db)
    levels = load_settings().service_levels()
    assert opened == (
        f"Ticket #{first.id} is open (priority high). The support team will answer the "
        f"customer by e-mail {levels.promise('ticket', first.created_at)}."
    )
    assert opened.endswith(
        "(business hours Mon-Fri 08:00-20:00, Sat 09:00-17:00 America/New_York)."
    )
    assert escalated.startswith(f"Escalation #{second.id} is open.")
    assert (first.user_id, first.session_id, first.turn) == ("alice", "s-alice", 3)
    assert (first.kind, first.subject, first.priority, first.status) == (
        "ticket",
        "Parcel A-10001 late",
        "high",
        "open",
    )
    assert (second.kind, second.priority, second.user_id) == ("escalation", "high", "alice")
    # The human gets the conversation so far, not just the reason.
    assert "human: My shoes from A-10001 have not arrived." in second.body
    assert run_tool(tools["open_ticket"], subject=" ", details="x").startswith("Both subject")
    assert tools["open_ticket"].args["priority"]["enum"] == list(TICKET_PRIORITIES)


def test_tools_work_on_a_fresh_demo(engine: Engine, knowledge: KnowledgeBase) -> None:
    """What the docs promise: after `make demo`, the chat page's user has orders to ask
    about, and the demo's tool names are the agent's."""
    with engine.begin() as connection:
        connection.execute(delete(Order))
    demo.generate(engine=engine, users=5, sessions=10, calls=30, days=3, support=True)
    tools = {t.name: t for t in make_tools(engine=engine, knowledge=knowledge)}
    assert set(tools) == set(demo_support.TOOL_LATENCY_MS)
    guest = {"user_id": demo.CHAT_PAGE_USER, "session_id": "s", "turn": 1}
    listed = run_tool(tools["list_recent_orders"], guest).splitlines()
    assert [line.split(": ")[1].split(",")[0] for line in listed] == [
        "paid",
        "shipped",
        "delivered",
        "returned",
    ]
    number = listed[1].split(":")[0]
    shipped = run_tool(tools["lookup_order"], guest, order_number=number)
    assert shipped.startswith(f"Order {number}: status shipped") and "tracking number" in shipped
    # A demo customer's order is not the guest's.
    theirs = orders.recent_orders(engine=engine, user_id="demo-user-001")
    assert run_tool(tools["lookup_order"], guest, order_number=theirs[0].order_number).startswith(
        "No order"
    )


# -- context for a model without tools ---------------------------------------------------------


def test_order_context(db: Engine) -> None:
    source = TableOrders(db)
    block = order_context(source, "alice", "Where are a-10001 and A-20001? And A-10001 again.")
    assert block is not None
    assert block.startswith("Order facts from the order system:\n\nOrder A-10001: status shipped")
    assert block.endswith("Order A-20001: not found for this customer.")  # Bob's
    assert block.count("Order A-10001") == 1
    assert order_context(source, "alice", "Where is my parcel?") is None
    assert order_context(source, "", "A-10001") is None


def test_help_context(knowledge: KnowledgeBase) -> None:
    block = help_context(knowledge, "Do you ship to Canada?")
    assert block is not None
    assert block.text.startswith("Help-center article (Shipping and delivery):\n## Do you ship")
    [article] = block.detail["articles"]
    assert (article["file"], article["title"]) == ("shipping.md", "Do you ship internationally?")
    assert help_context(knowledge, "What is the capital of France?") is None


def test_the_knowledge_base_has_the_promised_topics() -> None:
    entries = load_entries()
    assert 20 <= len(entries) <= 30
    topics = " ".join(e.title.lower() for e in entries)
    for subject in (
        "shipping",
        "return",
        "refund",
        "warranty",
        "payment",
        "address",
        "cancel",
        "password",
        "delete my account",
        "human",
    ):
        assert subject in topics, subject
    assert all(len(e.text) > 100 for e in entries)


def test_search_ranks_the_answering_entry_first(knowledge: KnowledgeBase) -> None:
    """Customer phrasings that share few words with the entry's title still find it."""
    for query, title in (
        ("my card got billed two times", "I was charged twice"),
        ("do you take paypal", "Which payment methods do you accept?"),
        ("the box came crushed and the speaker is broken", "My parcel arrived damaged"),
        ("I want a real person", "How can I talk to a human?"),
        ("how do I get rid of my account", "How do I delete my account and my data?"),
    ):
        hits = knowledge.search(query, k=3)
        assert hits[0].entry.title.startswith(title), (query, [h.entry.title for h in hits])
        assert hits[0].score >= max(SEARCH_MIN_SCORE, hits[1].score) >= hits[2].score
    assert knowledge.search("", k=3) == []


# -- the agent loop ---------------------------------------------------------------------------


class Rendezvous(AgentMiddleware):
    """Holds every tool call until `parties` of them are running at once: with sequential
    execution the barrier times out and the calls fail."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=5)

    def wrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any]
    ) -> Any:
        self.barrier.wait()
        return handler(request)


def config(**metadata: Any) -> dict[str, Any]:
    meta = ALICE | metadata
    return {"configurable": {"thread_id": meta["session_id"]}}


def context(**metadata: Any) -> TurnContext:
    return _context(ALICE | metadata)


def test_two_tool_calls_run_in_parallel_and_are_recorded(
    db: Engine, tools: dict[str, BaseTool]
) -> None:
    model = ScriptedChatModel(
        responses=[
            AIMessage(
                "",
                tool_calls=[
                    {"name": "lookup_order", "args": {"order_number": "A-10001"}, "id": "c1"},
                    {
                        "name": "search_help_center",
                        "args": {"query": "my parcel is late"},
                        "id": "c2",
                    },
                ],
            ),
            AIMessage("Your order A-10001 shipped with UPS two days ago."),
        ]
    )
    agent = create_agent(
        model,
        list(tools.values()),
        middleware=[ToolTelemetryMiddleware(events=EventRecorder(db)), Rendezvous(2)],
    )
    result = agent.invoke(
        {"messages": [HumanMessage("Where is A-10001?")]}, config=config(), context=context()
    )
    assert result["messages"][-1].text == "Your order A-10001 shipped with UPS two days ago."
    # Both results (not barrier timeouts) reached the model's second call, under their ids.
    second = model.prompts[1]
    results = {m.tool_call_id: m for m in second if isinstance(m, ToolMessage)}
    assert set(results) == {"c1", "c2"}
    assert results["c1"].status == "success" and "status shipped" in results["c1"].text
    assert "## My order is late or the tracking has not moved" in results["c2"].text
    recorded = {e.name: e for e in events(db)}
    assert set(recorded) == {"lookup_order", "search_help_center"}
    for event in recorded.values():
        assert (event.kind, event.status, event.error) == ("tool_call", "ok", None)
        assert (event.user_id, event.session_id, event.turn) == ("alice", "s-alice", 3)
        assert 0 < event.latency_ms < 5000
    detail = json.loads(recorded["lookup_order"].detail)
    assert detail == {"args": {"order_number": "A-10001"}, "result": results["c1"].text[:300]}
    # The help-center articles behind the result, for the chat page's expander.
    articles = json.loads(recorded["search_help_center"].detail)["articles"]
    assert articles[0]["title"] == "My order is late or the tracking has not moved"
    assert articles[0]["file"] == "shipping.md"
    assert [a["score"] for a in articles] == sorted((a["score"] for a in articles), reverse=True)


@tool
def flaky_tool(order_number: str) -> str:
    """A tool that always fails, like one whose service is down.

    Args:
        order_number: Any order number.
    """
    raise ConnectionError("inventory service unreachable")


def test_a_failing_tool_becomes_an_error_message_and_the_turn_completes(
    db: Engine, tools: dict[str, BaseTool]
) -> None:
    model = ScriptedChatModel(
        responses=[
            AIMessage(
                "",
                tool_calls=[
                    {"name": "flaky_tool", "args": {"order_number": "A-10001"}, "id": "f1"},
                    # An argument outside the schema: ToolNode rejects it before the tool runs.
                    {
                        "name": "open_ticket",
                        "args": {"subject": "x", "details": "y", "priority": "whenever"},
                        "id": "f2",
                    },
                ],
            ),
            AIMessage("Sorry, I could not check that right now."),
        ]
    )
    agent = create_agent(
        model,
        [*tools.values(), flaky_tool],
        middleware=[ToolTelemetryMiddleware(events=EventRecorder(db))],
    )
    result = agent.invoke(
        {"messages": [HumanMessage("Check A-10001")]}, config=config(), context=context()
    )
    assert result["messages"][-1].text == "Sorry, I could not check that right now."
    results = {m.tool_call_id: m for m in model.prompts[1] if isinstance(m, ToolMessage)}
    assert results["f1"].status == "error" and results["f2"].status == "error"
    assert results["f1"].text.startswith(
        "The tool flaky_tool failed (ConnectionError: inventory service unreachable)."
    )
    assert "priority" in results["f2"].text and "whenever" in results["f2"].text
    recorded = {e.name: e for e in events(db)}
    assert recorded["flaky_tool"].status == "error"
    assert recorded["flaky_tool"].error == "ConnectionError: inventory service unreachable"
    assert recorded["open_ticket"].status == "error" and "priority" in recorded["open_ticket"].error
    assert tickets(db) == []


def test_a_lost_event_does_not_cost_the_answer(
    db: Engine, tools: dict[str, BaseTool], caplog: pytest.LogCaptureFixture
) -> None:
    broken = create_engine("sqlite://")  # no agent_events table: every insert fails
    model = ScriptedChatModel(
        responses=[
            AIMessage("", tool_calls=[{"name": "list_recent_orders", "args": {}, "id": "l1"}]),
            AIMessage("You have three orders."),
        ]
    )
    agent = create_agent(
        model,
        list(tools.values()),
        middleware=[ToolTelemetryMiddleware(events=EventRecorder(broken))],
    )
    result = agent.invoke(
        {"messages": [HumanMessage("My orders?")]}, config=config(), context=context()
    )
    assert result["messages"][-1].text == "You have three orders."
    assert "A-10002: paid" in model.prompts[1][-1].text
    assert "could not record tool call list_recent_orders" in caplog.text


# -- the OpenAI wire format -------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.mark.parametrize("streaming", [False, True], ids=["invoke", "stream"])
def test_tool_calling_over_the_openai_wire_format(
    db: Engine, tools: dict[str, BaseTool], api: FakeOpenAI, streaming: bool
) -> None:
    api.script(
        tool_call("lookup_order", order_number="A-10001"),
        text("Your order A-10001 shipped with UPS.", usage=Usage(900, 12, cached_tokens=512)),
    )
    model = ChatOpenAI(
        base_url=api.url, api_key="test", model="gpt-4o-mini", max_retries=0, stream_usage=True
    )
    agent = create_agent(
        model, list(tools.values()), middleware=[ToolTelemetryMiddleware(events=EventRecorder(db))]
    )
    request = {"messages": [HumanMessage("Where is my order A-10001?")]}
    if streaming:
        streamed = [
            chunk.text
            for chunk, meta in agent.stream(
                request, config=config(), stream_mode="messages", context=context()
            )
            if isinstance(chunk, AIMessage) and meta["langgraph_node"] == "model"
        ]
        assert "".join(streamed) == "Your order A-10001 shipped with UPS."
        assert len(streamed) > 3  # token by token, not one block
    else:
        final = agent.invoke(request, config=config(), context=context())["messages"][-1]
        assert final.text == "Your order A-10001 shipped with UPS."
        assert final.usage_metadata["input_token_details"]["cache_read"] == 512
    assert api.pending == 0
    first, second = api.bodies
    assert bool(first.get("stream")) is streaming
    assert [t["function"]["name"] for t in first["tools"]] == list(tools)
    schema = first["tools"][0]["function"]["parameters"]
    assert list(schema["properties"]) == ["order_number"]  # the user id is not the model's
    call = second["messages"][-2]["tool_calls"][0]
    assert call["function"]["name"] == "lookup_order"
    result = second["messages"][-1]
    assert result["role"] == "tool" and result["tool_call_id"] == call["id"]
    assert result["content"].startswith("Order A-10001: status shipped")
    assert [(e.name, e.status) for e in events(db)] == [("lookup_order", "ok")]


def test_the_fake_server_speaks_errors_retries_and_usage_like_openai(api: FakeOpenAI) -> None:
    """What other tests rely on: the OpenAI client retries a 429 after its Retry-After and a
    dropped connection, surfaces a 503 and a timeout, and reads cached tokens when streaming."""
    api.script(
        error(429, retry_after=0.3),
        drop(),
        text("third time lucky"),
        error(503),
        text("too late", delay=1.0),
        text("streamed answer", usage=Usage(1200, 3, cached_tokens=1024)),
    )
    patient = ChatOpenAI(base_url=api.url, api_key="test", model="gpt-4o-mini", max_retries=2)
    started = time.perf_counter()
    assert patient.invoke("hi").text == "third time lucky"
    assert time.perf_counter() - started >= 0.3
    strict = ChatOpenAI(
        base_url=api.url, api_key="test", model="gpt-4o-mini", max_retries=0, timeout=0.3
    )
    with pytest.raises(openai.APIStatusError) as status:
        strict.invoke("hi")
    assert status.value.status_code == 503
    with pytest.raises(openai.APITimeoutError):
        strict.invoke("hi")
    streamed = ChatOpenAI(
        base_url=api.url, api_key="test", model="gpt-4o-mini", max_retries=0, stream_usage=True
    )
    chunks = list(streamed.stream("hi"))
    assert "".join(c.text for c in chunks) == "streamed answer"
    usage = sum(chunks[1:], chunks[0]).usage_metadata
    assert usage is not None
    assert (usage["input_tokens"], usage["output_tokens"]) == (1200, 3)
    assert usage["input_token_details"]["cache_read"] == 1024
    assert api.pending == 0 and len(api.requests) == 6
    assert api.bodies[-1]["stream_options"] == {"include_usage": True}
    assert api.requests[0].headers["authorization"] == "Bearer test"
    with pytest.raises(openai.BadRequestError, match="no scripted reply left"):
        strict.invoke("one too many")
