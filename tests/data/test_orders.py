"""Orders from the team's systems: the orders-API client against a local server speaking the
contract in docs/agent.md (slow answers, 404, 500, malformed JSON, a bad token, a server that is
down), the import command and upsert_orders on SQLite and Postgres, and the app-assembled agent
finding a customer's real order from each source with the demo off."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, select

from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase
from agent.tools import CANNOT_CHECK_ORDERS
from data.config.settings import load_settings
from data.integrations.order_records import OrderIn
from data.integrations.orders import (
    HttpOrders,
    OrdersUnavailable,
    TableOrders,
    get_order,
    import_file,
    main,
    order_source,
    upsert_orders,
)
from data.store.orm import AgentEvent
from data.store.orm_support import ORDER_STATUSES, Order, SupportTicket
from tests.helpers.fake_orders import FakeOrdersApi
from tests.helpers.support import SupportChat, dumps, order_json

TOKEN = "orders-secret-token"


@pytest.fixture
def api() -> Iterator[FakeOrdersApi]:
    with FakeOrdersApi(token=TOKEN) as server:
        server.add(**order_json("A-10001", "alice", "shipped"))
        server.add(**order_json("A-10002", "alice", "paid", placed_at="2026-11-25T09:00:00Z"))
        server.add(**order_json("A-20001", "bob", "delivered", delivered_at="2026-11-24T12:00Z"))
        server.add(**order_json("B-30001", "a b/c", "placed"))
        yield server


def client(api: FakeOrdersApi, **kwargs: object) -> HttpOrders:
    settings = load_settings(orders_api_url=api.url, orders_api_token=TOKEN, **kwargs)
    source = order_source(settings, engine=None)  # type: ignore[arg-type]
    assert isinstance(source, HttpOrders)
    return source


@pytest.fixture
def db(engine: Engine) -> Engine:
    with engine.begin() as connection:
        connection.execute(delete(Order))
        connection.execute(delete(SupportTicket))
    return engine


# -- the HTTP source ---------------------------------------------------------------------------


def test_http_source_speaks_the_contract(api: FakeOrdersApi) -> None:
    source = client(api)
    order = source.get_order(user_id="alice", order_number="a10001")
    assert order is not None
    assert (order.order_number, order.status, order.carrier) == ("A-10001", "shipped", "UPS")
    assert order.items[0].name == "Trail running shoes" and order.total_usd == 89.0
    assert order.placed_at.isoformat() == "2026-11-20T10:00:00+00:00"
    # Bob's order and an unknown one look the same to Alice: a 404.
    assert source.get_order(user_id="alice", order_number="A-20001") is None
    assert source.get_order(user_id="alice", order_number="A-99999") is None
    assert source.get_order(user_id="alice", order_number="not a number") is None
    recent = source.recent_orders(user_id="alice", limit=5)
    assert [o.order_number for o in recent] == ["A-10002", "A-10001"]
    assert [o.order_number for o in source.recent_orders(user_id="alice", limit=1)] == ["A-10002"]
    assert source.recent_orders(user_id="carol") == []
    # A user id with a space and a slash is one path segment.
    assert source.get_order(user_id="a b/c", order_number="B-30001") is not None
    paths = [path for path, _ in api.requests]
    assert "/api/v1/customers/alice/orders/A-10001" in paths
    assert "/api/v1/customers/a%20b%2Fc/orders/B-30001" in paths
    assert {auth for _, auth in api.requests} == {f"Bearer {TOKEN}"}


def test_http_source_never_shows_another_customers_order(api: FakeOrdersApi) -> None:
    """An API that answers with someone else's order (a bug on its side) is not believed."""
    source = client(api)
    original = api.answer

    def wrong_user(path: str, query: dict[str, list[str]], auth: str | None) -> tuple[int, object]:
        status, payload = original(path, query, auth)
        if isinstance(payload, dict) and "order_number" in payload:
            payload = {**payload, "user_id": "mallory"}
        if isinstance(payload, dict) and "orders" in payload:
            payload = {"orders": [{**o, "user_id": "mallory"} for o in payload["orders"]]}
        return status, payload

    api.answer = wrong_user  # type: ignore[method-assign]
    assert source.get_order(user_id="alice", order_number="A-10001") is None
    assert source.recent_orders(user_id="alice") == []


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ("slow", "the orders API at 127.0.0.1 did not answer within 0.3 s"),
        ("500", "the orders API at 127.0.0.1 answered HTTP 500"),
        ("malformed", "the orders API at 127.0.0.1 sent an answer that is not JSON"),
        ("wrong_shape", "sent an order that does not fit the contract (placed_at: Field required)"),
        ("bad_token", "the orders API at 127.0.0.1 answered HTTP 401"),
        ("down", "the orders API at 127.0.0.1 is unreachable (ConnectError)"),
    ],
)
def test_http_source_failures_are_named(api: FakeOrdersApi, failure: str, reason: str) -> None:
    source = client(api, orders_api_timeout_s=0.3)
    if failure == "slow":
        api.delay_s = 0.6
    elif failure == "500":
        api.status = 500
    elif failure == "malformed":
        api.malformed = True
    elif failure == "wrong_shape":
        api.wrong_shape = True
    elif failure == "bad_token":
        api.token = "rotated"
    else:
        api.down()
    with pytest.raises(OrdersUnavailable) as raised:
        source.get_order(user_id="alice", order_number="A-10001")
    assert reason in str(raised.value)
    assert TOKEN not in str(raised.value)
    if failure != "wrong_shape":
        with pytest.raises(OrdersUnavailable):
            source.recent_orders(user_id="alice")


# -- the agent finds real orders (demo off) ---------------------------------------------------


@pytest.fixture
def chat_parts(
    tmp_path: Path, shared_embedder: Embedder, shared_knowledge: KnowledgeBase
) -> dict[str, object]:
    return {"embedder": shared_embedder, "knowledge": shared_knowledge}


def tool_events(engine: Engine) -> list[AgentEvent]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(AgentEvent).where(AgentEvent.kind == "tool_call").order_by(AgentEvent.id)
            ).all()
        )


def test_the_agent_finds_a_real_order_from_the_orders_api(
    db: Engine, api: FakeOrdersApi, tmp_path: Path, chat_parts: dict[str, object]
) -> None:
    chat = SupportChat(
        db,
        tmp_path / "data",
        orders_api_url=api.url,
        orders_api_token=TOKEN,
        **chat_parts,  # type: ignore[arg-type]
    )
    try:
        answer = chat.say("alice", "s-api", "Where is my order A-10001?").text
        assert answer.startswith("[success] Order A-10001: status shipped")
        assert "tracking number 1Z999AA10123456784" in answer
        # The customer is the run's, whatever the model asks for: Bob's order stays hidden.
        other = chat.say("alice", "s-api", "And A-20001?").text
        assert other.startswith("[success] No order A-20001 was found for this customer")
        with db.connect() as connection:
            assert connection.execute(select(func.count()).select_from(Order)).scalar_one() == 0
        assert ("/api/v1/customers/alice/orders/A-20001", f"Bearer {TOKEN}") in api.requests
        events = tool_events(db)
        assert [(e.name, e.status, e.user_id) for e in events] == [
            ("lookup_order", "ok", "alice"),
            ("lookup_order", "ok", "alice"),
        ]
    finally:
        chat.close()


def test_an_orders_api_that_is_down_is_a_failed_call_and_the_turn_goes_on(
    db: Engine, api: FakeOrdersApi, tmp_path: Path, chat_parts: dict[str, object]
) -> None:
    chat = SupportChat(
        db,
        tmp_path / "data",
        orders_api_url=api.url,
        orders_api_token=TOKEN,
        orders_api_timeout_s=0.3,
        **chat_parts,  # type: ignore[arg-type]
    )
    try:
        api.status = 500
        outcome = chat.say("alice", "s-down", "Where is my order A-10001?")
        assert outcome.text.startswith(
            f"[error] {CANNOT_CHECK_ORDERS}: the orders API at 127.0.0.1 answered HTTP 500."
        )
        assert "Tell the customer that you cannot check orders right now" in outcome.text
        [event] = tool_events(db)
        assert (event.name, event.status) == ("lookup_order", "error")
        assert event.error.startswith(f"{CANNOT_CHECK_ORDERS}: the orders API")
        # The next turn works again once the API is back.
        api.status = None
        again = chat.say("alice", "s-down", "What about my orders?")
        assert again.text.startswith("[success] A-10002: paid")
    finally:
        chat.close()


def test_the_model_without_tools_gets_the_same_order_source(
    db: Engine, api: FakeOrdersApi, tmp_path: Path, chat_parts: dict[str, object]
) -> None:
    """The embedded model gets no tools; its prompt carries what the orders API says, and an API
    that is down is said there too, recorded as a failed lookup."""
    chat = SupportChat(
        db,
        tmp_path / "data",
        tools=False,
        orders_api_url=api.url,
        orders_api_token=TOKEN,
        orders_api_timeout_s=0.3,
        **chat_parts,  # type: ignore[arg-type]
    )
    try:
        chat.say("alice", "s-local", "Where is my order A-10001?")
        prompt = "\n".join(str(m.text) for m in chat.model.prompts[-1])
        assert "Order facts from the order system:\n\nOrder A-10001: status shipped" in prompt
        api.delay_s = 0.6
        chat.say("alice", "s-local", "And A-10002?")
        prompt = "\n".join(str(m.text) for m in chat.model.prompts[-1])
        assert f"{CANNOT_CHECK_ORDERS}: the orders API at 127.0.0.1 did not answer" in prompt
        lookups = [e for e in tool_events(db) if e.name == "lookup_order"]
        assert [e.status for e in lookups] == ["ok", "error"]
        assert "did not answer within 0.3 s" in lookups[1].error
    finally:
        chat.close()


# -- the import command and upsert_orders -----------------------------------------------------

CSV_ROWS = [
    [
        "order_number",
        "user_id",
        "status",
        "items",
        "total_usd",
        "placed_at",
        "shipped_at",
        "delivered_at",
        "carrier",
        "tracking_number",
        "warehouse",
    ],
    [
        "A-50001",
        "erin",
        "shipped",
        "1 x Rain jacket @ 120.00; 2 x Socks @ 5",
        "130",
        "2026-11-28T09:00:00",
        "2026-11-29T10:00:00+01:00",
        "",
        "DHL",
        "JD0140",
        "north",
    ],
    [
        "a50002",
        "erin",
        "paid",
        '[{"name": "Tent", "qty": 1, "unit_usd": 300}]',
        "300",
        "2026-11-30T12:00:00Z",
        "",
        "",
        "",
        "",
        "north",
    ],
    ["A-5003", "erin", "paid", "1 x Mug @ 9", "9", "2026-11-30T12:00:00Z", "", "", "", "", ""],
    ["A-50004", "erin", "lost", "1 x Mug @ 9", "9", "2026-11-30T12:00:00Z", "", "", "", "", ""],
    ["A-50005", "", "paid", "1 x Mug @ 9", "9", "yesterday", "", "", "", "", ""],
    ["A-50006", "erin", "paid", "one mug", "9", "2026-11-30T12:00:00Z", "", "", "", "", ""],
    ["A-50007", "erin", "paid", "0 x Mug @ 9", "9", "2026-11-30T12:00:00Z", "", "", "", "", ""],
    [
        "A-50008",
        "erin",
        "delivered",
        "1 x Mug @ 9",
        "9",
        "2026-11-30T12:00Z",
        "",
        "2026-11-29",
        "",
        "",
        "",
    ],
    [
        "A-50001",
        "erin",
        "delivered",
        "1 x Rain jacket @ 120",
        "120",
        "2026-11-28T09:00:00Z",
        "",
        "",
        "",
        "",
        "",
    ],
]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def test_import_csv_writes_the_valid_rows_and_says_why_the_others_were_rejected(
    db: Engine, tmp_path: Path
) -> None:
    report = import_file(engine=db, path=write_csv(tmp_path / "orders.csv", CSV_ROWS))
    assert (report.read, report.inserted, report.updated) == (9, 2, 0)
    assert report.ignored_columns == ["warehouse"]
    reasons = {r.line: (r.order_number, r.reason) for r in report.rejected}
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9, 10]
    assert reasons[4] == ("A-5003", "order_number: 'A-5003' is not an order number like A-10234")
    assert reasons[5][1].startswith("status: Input should be 'placed', 'paid'")
    assert "user_id: Field required" in reasons[6][1]
    assert "placed_at: Input should be a valid datetime" in reasons[6][1]
    assert reasons[7][1] == "items: item 'one mug' is not like '2 x Socks @ 5.00'"
    assert "items.0.qty: Input should be greater than or equal to 1" in reasons[8][1]
    assert reasons[9][1] == "order: delivered_at is before it shipped or was placed"
    assert reasons[10] == ("A-50001", "order_number: A-50001 already appears at 2")
    jacket = get_order(engine=db, user_id="erin", order_number="A-50001")
    assert jacket is not None
    assert [(i.qty, i.name, i.unit_usd) for i in jacket.items] == [
        (1, "Rain jacket", 120.0),
        (2, "Socks", 5.0),
    ]
    # No offset means UTC; an offset is converted.
    assert jacket.placed_at.isoformat() == "2026-11-28T09:00:00+00:00"
    assert jacket.shipped_at is not None
    assert jacket.shipped_at.isoformat() == "2026-11-29T09:00:00+00:00"
    assert get_order(engine=db, user_id="erin", order_number="A-50002") is not None
    with db.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Order)).scalar_one() == 2
        assert connection.execute(select(Order.demo)).scalars().all() == [False, False]


def test_import_json_lines_updates_existing_orders_and_a_dry_run_writes_nothing(
    db: Engine, tmp_path: Path
) -> None:
    rows = [order_json("A-60001", "finn", "paid"), order_json("A-60002", "finn", "shipped")]
    path = tmp_path / "orders.jsonl"
    path.write_text(dumps(rows) + "\n{not json\n" + '["a list"]\n', encoding="utf-8")
    first = import_file(engine=db, path=path)
    assert (first.read, first.inserted, first.updated) == (4, 2, 0)
    assert [(r.line, r.reason) for r in first.rejected] == [
        (4, "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
        (5, "not a JSON object"),
    ]
    rows[0] = order_json("A-60001", "finn", "shipped")
    path.write_text(dumps([*rows, order_json("A-60003", "finn", "placed")]), encoding="utf-8")
    dry = import_file(engine=db, path=path, dry_run=True)
    assert (dry.inserted, dry.updated, dry.written) == (1, 2, False)
    assert get_order(engine=db, user_id="finn", order_number="A-60001").status == "paid"  # type: ignore[union-attr]
    assert get_order(engine=db, user_id="finn", order_number="A-60003") is None
    second = import_file(engine=db, path=path)
    assert (second.inserted, second.updated, second.rejected) == (1, 2, [])
    assert get_order(engine=db, user_id="finn", order_number="A-60001").status == "shipped"  # type: ignore[union-attr]


def test_the_import_command(db: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = db.url.render_as_string(hide_password=False)
    good = tmp_path / "good.jsonl"
    good.write_text(dumps([order_json("A-70001", "gus", "paid")]), encoding="utf-8")
    assert main(["import", str(good), "--db", url]) == 0
    out = capsys.readouterr().out
    assert "1 rows read: 1 new, 0 updated written, 0 rejected" in out
    assert main(["import", str(write_csv(tmp_path / "mixed.csv", CSV_ROWS)), "--db", url]) == 1
    out = capsys.readouterr().out
    assert "9 rows read: 2 new, 0 updated written, 7 rejected; ignored columns: warehouse" in out
    assert "  line 5 (A-50004): status: Input should be" in out
    assert main(["import", str(tmp_path / "missing.csv"), "--db", url]) == 2
    assert "is not a file" in capsys.readouterr().err
    headless = write_csv(tmp_path / "headless.csv", [["number", "who"], ["A-1", "x"]])
    assert main(["import", str(headless), "--db", url]) == 2
    err = capsys.readouterr().err
    assert (
        "the CSV header lacks the column(s) order_number, user_id, status, items, placed_at" in err
    )


def test_upsert_orders_is_what_post_orders_calls(db: Engine) -> None:
    orders = [OrderIn.model_validate(order_json(f"A-8000{i}", "hana", "paid")) for i in range(3)]
    report = upsert_orders(engine=db, orders=[*orders, orders[0]])
    assert (report.read, report.inserted, report.updated) == (4, 3, 0)
    assert [(r.line, r.reason) for r in report.rejected] == [
        (4, "order_number: A-80000 already appears at 1")
    ]
    changed = orders[1].model_copy(update={"status": "cancelled"})
    assert upsert_orders(engine=db, orders=[changed]).updated == 1
    found = TableOrders(db).get_order(user_id="hana", order_number="A-80001")
    assert found is not None and found.status == "cancelled"
    with pytest.raises(ValueError, match="not an order number"):
        OrderIn.model_validate(order_json("12345", "hana"))
    # OrderIn accepts exactly the statuses the orders table documents.
    assert set(OrderIn.model_json_schema()["properties"]["status"]["enum"]) == set(ORDER_STATUSES)


def test_the_agent_finds_an_imported_order(
    db: Engine, tmp_path: Path, chat_parts: dict[str, object]
) -> None:
    url = db.url.render_as_string(hide_password=False)
    path = tmp_path / "export.jsonl"
    path.write_text(
        dumps([order_json("C-12345", "ivy", "shipped"), order_json("C-12346", "jo", "paid")]),
        encoding="utf-8",
    )
    assert main(["import", str(path), "--db", url]) == 0
    chat = SupportChat(db, tmp_path / "data", **chat_parts)  # type: ignore[arg-type]
    try:
        answer = chat.say("ivy", "s-ivy", "Has c-12345 shipped yet?").text
        assert answer.startswith("[success] Order C-12345: status shipped")
        assert "Shipped: 2026-11-21 with UPS" in answer
        assert chat.say("ivy", "s-ivy", "What about C-12346?").text.startswith(
            "[success] No order C-12346 was found for this customer"
        )
    finally:
        chat.close()


def test_the_orders_table_that_is_down_is_named(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    broken = TableOrders(create_engine(f"sqlite:///{tmp_path}/missing/dir/x.sqlite3"))
    with pytest.raises(OrdersUnavailable, match="the orders table cannot be read"):
        broken.get_order(user_id="x", order_number="A-10001")
