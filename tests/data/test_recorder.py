"""The recorder and the telemetry callback, on SQLite and on Postgres."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langgraph.checkpoint.memory import InMemorySaver
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from agent.context import TurnContext
from agent.graph import build_agent
from agent.models import ModelSpec
from agent.runtime import make_ledger
from agent.telemetry import CallTelemetry
from data.analytics.cost import cost_totals
from data.analytics.filters import Filters
from data.store.recorder import Recorder, record_calls
from data.store.records import CallRecord, EventRecord
from tests.helpers.records import call

SPEC = ModelSpec(
    provider="openai",
    model="gpt-4o-mini",
    base_url=None,
    context_window=128_000,
    max_tokens=256,
    timeout_s=10,
)


def rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        result = connection.execute(text("SELECT * FROM model_calls ORDER BY id"))
        return [dict(r) for r in result.mappings()]


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_recorder_writes_a_row_and_updates_metrics(engine: Engine) -> None:
    model = f"m-{uuid.uuid4().hex[:6]}"
    before = sample("agent_calls_total", {"model": model, "purpose": "chat", "status": "ok"})
    ts = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    Recorder(engine)(call(model=model, ts=ts))
    [row] = rows(engine)
    assert row["model"] == model and row["input_tokens"] == 1000
    assert row["cached_input_tokens"] == 200 and row["cost_status"] == "computed"
    assert row["ttft_ms"] == pytest.approx(120.0)
    assert (
        sample("agent_calls_total", {"model": model, "purpose": "chat", "status": "ok"})
        == before + 1
    )
    assert sample("token_usage_total", {"model": model, "type": "cached_input"}) == 200
    assert sample("token_usage_total", {"model": model, "type": "input"}) == 800
    assert sample("context_window_percent_count", {"model": model}) == 1
    assert sample("model_time_to_first_token_seconds_sum", {"model": model}) == pytest.approx(0.12)


def test_timestamps_round_trip_in_utc(engine: Engine) -> None:
    seoul = datetime(2026, 11, 20, 18, 30, tzinfo=UTC).astimezone(ZoneInfo("Asia/Seoul"))
    record_calls(engine=engine, calls=[call(ts=seoul)])
    # The call is at 18:30 UTC (03:30 the next day in Seoul).
    day = datetime(2026, 11, 20, tzinfo=UTC)
    window = Filters(start=day + timedelta(hours=18), end=day + timedelta(hours=19))
    assert cost_totals(engine=engine, filters=window).calls == 1
    seoul_hour = Filters(start=day + timedelta(hours=27), end=day + timedelta(hours=28))
    assert cost_totals(engine=engine, filters=seoul_hour).calls == 0


def test_batched_insert_keeps_every_row(engine: Engine) -> None:
    calls = [call(turn=i, session_id=f"s{i % 7}") for i in range(2_500)]
    assert record_calls(engine=engine, calls=calls) == 2_500
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*), sum(turn) FROM model_calls")).one() == (
            2_500,
            sum(range(2_500)),
        )


def test_the_ledger_holds_an_open_turn_and_writes_the_rest_at_once(engine: Engine) -> None:
    """An open turn's calls and events are held and written together by `take` (the metrics
    with them); a turn nobody opened, or a record that comes after `take` (the memory writer
    storing facts late), is written at once and kept nowhere."""
    model = f"m-{uuid.uuid4().hex[:6]}"
    labels = {"model": model, "purpose": "chat", "status": "ok"}
    before = sample("agent_calls_total", labels)
    ledger = make_ledger(engine)
    event = EventRecord(
        user_id="u1", session_id="s1", turn=1, kind="memory_recall", name="memory", latency_ms=3
    )
    ledger.open("s1", 1)
    ledger.call(call(model=model))
    ledger.event(event)
    with pytest.raises(ValueError, match="unknown event kind"):
        ledger.event(replace(event, kind="nonsense"))
    assert rows(engine) == [] and sample("agent_calls_total", labels) == before
    ledger.call(call(model=model, session_id="s2"))  # not opened: written now
    assert [r["session_id"] for r in rows(engine)] == ["s2"]
    held = ledger.take("s1", 1)
    assert [c.model for c in held.calls] == [model] and held.events == [event]
    assert sorted(r["session_id"] for r in rows(engine)) == ["s1", "s2"]
    assert sample("agent_calls_total", labels) == before + 2
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM agent_events")).scalar_one() == 1
    ledger.call(call(model=model, output_tokens=7))  # after take: written now, not kept
    assert len(rows(engine)) == 3 and ledger.take("s1", 1).calls == []


def test_unpriced_call_is_stored_as_unknown_not_zero(engine: Engine) -> None:
    Recorder(engine)(call(model="acme-llm", cost_usd=None, cost_status="unknown"))
    [row] = rows(engine)
    assert row["cost_usd"] is None and row["cost_status"] == "unknown"


def _telemetry(engine: Engine) -> CallTelemetry:
    return CallTelemetry(spec=SPEC, purpose="chat", sink=Recorder(engine))


def test_telemetry_prices_provider_usage_with_cached_tokens(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outside an agent run, as the graph would give it: the turn's context.
    context = TurnContext(user_id="u9", session_id="s9", turn=3)
    monkeypatch.setattr("agent.telemetry.current_turn", lambda: context)
    handler = _telemetry(engine)
    run_id = uuid.uuid4()
    handler.on_chat_model_start(
        {},
        [[HumanMessage("hi")]],
        run_id=run_id,
    )
    handler.on_llm_new_token("He", run_id=run_id)
    message = AIMessage(
        "Hello",
        usage_metadata={
            "input_tokens": 10_000,
            "output_tokens": 100,
            "total_tokens": 10_100,
            "input_token_details": {"cache_read": 6_000},
        },
    )
    handler.on_llm_end(LLMResult(generations=[[ChatGeneration(message=message)]]), run_id=run_id)
    [row] = rows(engine)
    assert (row["user_id"], row["session_id"], row["turn"]) == ("u9", "s9", 3)
    assert row["input_tokens"] == 10_000 and row["cached_input_tokens"] == 6_000
    assert row["cost_usd"] == pytest.approx((4_000 * 0.15 + 6_000 * 0.075 + 100 * 0.6) / 1e6)
    assert row["context_tokens"] == 10_000 and row["context_window"] == 128_000
    assert 0 <= row["ttft_ms"] <= row["latency_ms"]
    assert row["usage_source"] == "provider" and row["status"] == "ok"


def test_telemetry_records_a_failed_call(engine: Engine) -> None:
    handler = _telemetry(engine)
    run_id = uuid.uuid4()
    handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run_id, metadata={})
    handler.on_llm_error(TimeoutError("upstream took too long"), run_id=run_id)
    [row] = rows(engine)
    assert row["status"] == "error"
    assert row["error"] == "TimeoutError: upstream took too long"
    assert row["input_tokens"] == 0 and row["cost_usd"] == 0.0


def test_a_broken_sink_never_breaks_the_call() -> None:
    def sink(_: CallRecord) -> None:
        raise RuntimeError("database is down")

    handler = CallTelemetry(spec=SPEC, purpose="chat", sink=sink)
    run_id = uuid.uuid4()
    handler.on_chat_model_start({}, [[HumanMessage("hi")]], run_id=run_id)
    handler.on_llm_end(
        LLMResult(generations=[[ChatGeneration(message=AIMessage("x"))]]), run_id=run_id
    )  # no exception


class ScriptedModel(FakeMessagesListChatModel):
    """A scripted chat model that accepts tools (the core fake lacks bind_tools)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self


def test_summarizer_calls_are_recorded_as_summarize(engine: Engine) -> None:
    def usage(n_in: int, n_out: int) -> dict[str, int]:
        return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}

    recorder = Recorder(engine)
    chat = ScriptedModel(
        responses=[AIMessage("answer " * 30, usage_metadata=usage(300, 60)) for _ in range(6)],
        profile={"max_input_tokens": 400},
        callbacks=[CallTelemetry(spec=SPEC, purpose="chat", sink=recorder)],
    )
    summary = ScriptedModel(
        responses=[
            AIMessage("Customer asked about order 123.", usage_metadata=usage(500, 12))
            for _ in range(6)
        ],
        profile={"max_input_tokens": 400},
        callbacks=[CallTelemetry(spec=SPEC, purpose="summarize", sink=recorder)],
    )
    agent = build_agent(
        chat_model=chat,
        summary_model=summary,
        checkpointer=InMemorySaver(),
        trigger=[("fraction", 0.75)],
        keep=("messages", 2),
    )
    config = {"configurable": {"thread_id": "t1"}}
    for turn in range(1, 5):
        agent.invoke(
            {"messages": [HumanMessage(f"question {turn} " * 20)]},
            config=config,
            context=TurnContext(user_id="u1", session_id="t1", turn=turn),
        )
    purposes = [(r["purpose"], r["turn"]) for r in rows(engine)]
    folds = [i for i, (purpose, _) in enumerate(purposes) if purpose == "summarize"]
    assert folds, purposes
    # The fold happens before the model call of the same turn, inside that turn.
    assert all(purposes[i + 1] == ("chat", purposes[i][1]) for i in folds), purposes
    assert sum(p == "chat" for p, _ in purposes) == 4
    summarize = [r for r in rows(engine) if r["purpose"] == "summarize"]
    assert all(r["input_tokens"] == 500 and r["session_id"] == "t1" for r in summarize)


def test_a_turn_is_stored_as_the_transcript_reads_it(engine: Engine) -> None:
    """start_turn and add_assistant_message (built-once statements): a new session is created
    under its caller with the message's first words as title, turns count up per session,
    a later turn moves the session's updated_at (the text is stored as given: the service
    cleans it first), and another user's turn on the session is
    refused with nothing written."""
    from data.store import conversations

    first = conversations.start_turn(
        engine=engine, session_id="st-1", user_id="ann", text="  Where is\n my order A-1?  "
    )
    conversations.add_assistant_message(
        engine=engine, session_id="st-1", turn=first, text="On its way.", run_id="run-1"
    )
    other = conversations.start_turn(engine=engine, session_id="st-2", user_id="ann", text="hi")
    with engine.connect() as connection:
        created = connection.execute(
            text("SELECT updated_at FROM chat_sessions WHERE id = 'st-1'")
        ).scalar_one()
    second = conversations.start_turn(
        engine=engine, session_id="st-1", user_id="ann", text="Thanks"
    )
    with pytest.raises(PermissionError):
        conversations.start_turn(engine=engine, session_id="st-1", user_id="bob", text="mine?")
    assert (first, second, other) == (1, 2, 1)
    with engine.connect() as connection:
        sessions = connection.execute(
            text("SELECT id, user_id, title, updated_at FROM chat_sessions ORDER BY id")
        ).all()
        messages = connection.execute(
            text(
                "SELECT session_id, turn, role, content, run_id FROM messages "
                "ORDER BY session_id, turn, id"
            )
        ).all()
    assert [(s.id, s.user_id, s.title) for s in sessions] == [
        ("st-1", "ann", "Where is my order A-1?"),
        ("st-2", "ann", "hi"),
    ]
    assert sessions[0].updated_at > created
    assert [tuple(m) for m in messages] == [
        ("st-1", 1, "user", "  Where is\n my order A-1?  ", None),
        ("st-1", 1, "assistant", "On its way.", "run-1"),
        ("st-1", 2, "user", "Thanks", None),
        ("st-2", 1, "user", "hi", None),
    ]
