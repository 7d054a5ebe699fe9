"""Demo history: the promised shape, and it never mixes into a database silently."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import Engine, delete, insert, text

from data.store import demo, demo_support
from data.store.orm_support import ORDER_STATUSES, Order, SupportTicket
from data.store.recorder import record_calls, record_event
from data.store.records import EventRecord
from tests.helpers.records import call

END = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture
def empty(engine: Engine) -> Engine:
    """The shared fixtures empty the call and event tables; orders and tickets
    are left to the tests that write them."""
    with engine.begin() as connection:
        connection.execute(delete(Order))
        connection.execute(delete(SupportTicket))
    return engine


def test_default_demo_has_the_promised_shape(sqlite_server_url: str) -> None:
    from data.store.db import make_engine

    engine = make_engine(sqlite_server_url)
    with engine.begin() as connection:
        for table in ("model_calls", "messages", "chat_sessions"):
            connection.execute(text(f"DELETE FROM {table}"))
    written = demo.generate(engine=engine, end=END)
    assert written["calls"] == 50_000 and written["sessions"] == 2_000
    assert written["users"] == 200
    with engine.connect() as connection:
        df = pd.read_sql_query(
            text(
                "SELECT ts, model, purpose, status, cost_usd, latency_ms,"
                " output_tokens FROM model_calls"
            ),
            connection,
        )
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="mixed")
    assert df["ts"].min() >= END - timedelta(days=30) - timedelta(hours=1)
    assert df["ts"].max() < END
    assert set(df["model"]) == {"gpt-4o-mini", "gpt-4.1-mini", "gpt-4o"}
    assert 20 <= (df["purpose"] == "summarize").sum() <= 5_000
    assert 0.005 <= (df["status"] == "error").mean() <= 0.03
    assert df["cost_usd"].notna().all()
    ok = df[df["status"] == "ok"]
    # Realistic shapes: latency grows with the answer and has a long tail.
    assert ok["latency_ms"].quantile(0.99) > 2 * ok["latency_ms"].median()
    assert ok[["latency_ms", "output_tokens"]].corr().iloc[0, 1] > 0.3


def _support_counts(engine: Engine) -> tuple[int, int, int]:
    """(orders, memory recalls, tool calls) in the database."""
    with engine.connect() as connection:
        return (
            connection.execute(text("SELECT count(*) FROM orders")).scalar_one(),
            connection.execute(
                text("SELECT count(*) FROM agent_events WHERE kind = 'memory_recall'")
            ).scalar_one(),
            connection.execute(
                text("SELECT count(*) FROM agent_events WHERE kind = 'tool_call'")
            ).scalar_one(),
        )


def test_loader_refuses_to_mix(empty: Engine, db_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["--db", db_url, "--calls", "300", "--sessions", "30", "--users", "10", "--days", "3"]
    assert demo.main(args) == 0
    assert demo.counts(engine=empty) == (300, 0)
    out = capsys.readouterr().out
    assert "34 orders" in out and f"try the chat page as {demo.CHAT_PAGE_USER!r}" in out
    loaded = _support_counts(empty)
    assert loaded[0] == 34 and loaded[1] > 200 and loaded[2] > 100
    assert demo.main(args) == 1
    assert "already has 300 demo calls" in capsys.readouterr().err
    assert demo.main([*args, "--replace"]) == 0
    assert demo.counts(engine=empty) == (300, 0)
    assert _support_counts(empty) == loaded  # replaced, not added
    record_calls(engine=empty, calls=[call()])
    # A live order and a live tool call of a live session: --remove must leave them alone.
    live_order = dict(
        order_number="B-00001",
        user_id="alice",
        status="paid",
        items="[]",
        total_usd=1.0,
        placed_at=END,
        demo=False,
    )
    with empty.begin() as connection:
        connection.execute(insert(Order), [live_order])
    record_event(
        engine=empty,
        event=EventRecord(
            user_id="alice",
            session_id="live-1",
            turn=1,
            kind="tool_call",
            name="lookup_order",
            latency_ms=5.0,
        ),
    )
    assert demo.main([*args, "--replace"]) == 1
    assert "has 1 live calls" in capsys.readouterr().err
    assert demo.main(["--db", db_url, "--remove"]) == 0
    assert demo.counts(engine=empty) == (0, 1)  # the live call is untouched
    assert _support_counts(empty) == (1, 0, 1)  # and so are the live order and tool call


def _rows(engine: Engine, query: str) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql_query(text(query), connection)


SMALL = dict(days=10, users=20, sessions=120, calls=1_500, seed=11, end=END)


def test_support_data_is_consistent_and_deterministic(empty: Engine) -> None:
    calls_query = (
        "SELECT ts, user_id, session_id, turn, model, latency_ms FROM model_calls ORDER BY id"
    )
    demo.generate(engine=empty, **SMALL)  # type: ignore[arg-type]
    plain = _rows(empty, calls_query)
    demo.remove(engine=empty)
    written = demo.generate(engine=empty, support=True, **SMALL)  # type: ignore[arg-type]
    # Orders and events have their own random stream: the calls do not change.
    pd.testing.assert_frame_equal(_rows(empty, calls_query), plain)
    assert written["orders"] == 120 + 4

    orders = _rows(empty, "SELECT * FROM orders ORDER BY order_number")
    for column in ("placed_at", "shipped_at", "delivered_at"):
        orders[column] = pd.to_datetime(orders[column], utc=True, format="mixed")
    assert orders["order_number"].str.fullmatch(r"A-\d{5}").all() and orders["demo"].all()
    assert set(orders["status"]) <= set(ORDER_STATUSES)
    unshipped = orders["status"].isin(["placed", "paid", "cancelled"])
    assert orders["shipped_at"].isna().eq(unshipped).all()
    assert orders["carrier"].isna().eq(unshipped).all()
    arrived = orders["status"].isin(["delivered", "returned"])
    assert orders["delivered_at"].notna().eq(arrived).all()
    assert (orders["shipped_at"] > orders["placed_at"]).where(~unshipped, True).all()
    assert (orders["delivered_at"] > orders["shipped_at"]).where(arrived, True).all()
    assert (orders["delivered_at"].where(arrived, END) <= END).all()
    assert (orders["status"] == "delivered").mean() > 0.5  # most sessions are days old
    for _, order in orders.iterrows():
        items = json.loads(order["items"])
        assert order["total_usd"] == pytest.approx(sum(i["qty"] * i["unit_usd"] for i in items))
    # The chat page's user can try every kind of question.
    guest = orders[orders["user_id"] == demo.CHAT_PAGE_USER]
    assert sorted(guest["status"]) == ["delivered", "paid", "returned", "shipped"]

    # Every order a conversation mentions belongs to the user who asks about it.
    asked = _rows(
        empty,
        "SELECT s.user_id, m.content FROM messages m JOIN chat_sessions s ON s.id = m.session_id"
        " WHERE m.role = 'user'",
    )
    owner = dict(zip(orders["order_number"], orders["user_id"], strict=True))
    mentioned = asked["content"].str.extract(r"(A-\d{5})")[0]
    assert mentioned.notna().sum() > 100
    assert (mentioned.dropna().map(owner) == asked.loc[mentioned.notna(), "user_id"]).all()

    events = _rows(empty, "SELECT * FROM agent_events")
    events["ts"] = pd.to_datetime(events["ts"], utc=True, format="mixed")
    assert (events["ts"] < END).all()
    recalls = events[events["kind"] == "memory_recall"]
    chat_turns = _rows(empty, "SELECT count(*) AS n FROM model_calls WHERE purpose = 'chat'")
    assert len(recalls) == chat_turns["n"][0]  # one recall per answer
    assert set(recalls["name"]) == {"memory"}
    ok = recalls[recalls["status"] == "ok"]
    assert set(ok["hits"]) == {0, 1, 2, 3, 4}
    assert ok["top_score"].isna().eq(ok["hits"] == 0).all()
    assert ok["top_score"].dropna().between(0.7, 0.95).all()
    recalled = ok["detail"].map(lambda d: [m["score"] for m in json.loads(d)["memories"]])
    assert (recalled.map(len) == ok["hits"]).all()
    assert (recalled[ok["hits"] > 0].map(max) == ok.loc[ok["hits"] > 0, "top_score"]).all()
    tools = events[events["kind"] == "tool_call"]
    assert set(tools["name"]) == set(demo_support.TOOL_LATENCY_MS)
    assert 0.001 <= (tools["status"] == "error").mean() <= 0.03
    median = tools[tools["status"] == "ok"].groupby("name")["latency_ms"].median()
    assert median["search_help_center"] > median["lookup_order"]  # it embeds the query
    detail = json.loads(tools[tools["name"] == "lookup_order"]["detail"].iloc[0])
    assert detail["args"]["order_number"] in owner and detail["result"].startswith("Order A-")

    # The same seed gives the same orders.
    demo.remove(engine=empty)
    demo.generate(engine=empty, support=True, **SMALL)  # type: ignore[arg-type]
    again = _rows(empty, "SELECT * FROM orders ORDER BY order_number")
    for column in ("placed_at", "shipped_at", "delivered_at"):
        again[column] = pd.to_datetime(again[column], utc=True, format="mixed")
    pd.testing.assert_frame_equal(
        again.drop(columns="id"), orders.drop(columns="id"), check_like=True
    )
