"""LangSmith runs: every agent run is traced to LANGSMITH_PROJECT with the assistant message's
run_id as the root run; with LangSmith unconfigured the agent sends nothing at all.

The real `langsmith` client talks to a local server that speaks its ingest endpoints."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from langchain_core.tracers.langchain import wait_for_all_tracers
from sqlalchemy import select

from agent.runtime import build_runtime
from data.config.settings import Settings, load_settings
from data.store.db import make_engine
from data.store.migrate import upgrade
from data.store.orm import Message
from tests.helpers.fake_langsmith import FakeLangSmith

pytestmark = pytest.mark.model


@pytest.fixture
def langsmith() -> Iterator[FakeLangSmith]:
    with FakeLangSmith() as server:
        yield server


def _runtime(settings: Settings, db_url: str):  # type: ignore[no-untyped-def]
    upgrade(db_url)
    engine = make_engine(db_url)
    return engine, build_runtime(settings, engine=engine)


def test_turn_is_traced_with_the_message_run_id(
    langsmith: FakeLangSmith, local_settings: Settings, db_url: str
) -> None:
    settings = load_settings(
        **{
            **local_settings.model_dump(),
            "database_url": db_url,
            "langsmith_tracing": True,
            "langsmith_api_key": "ls-test-key",
            "langsmith_endpoint": langsmith.url,
            "langsmith_project": "support-prod",
        }
    )
    engine, runtime = _runtime(settings, db_url)
    outcome = runtime.service.run_turn(user_id="u1", session_id="trace-1", message="Hi there")
    assert runtime.service.tracing.client is not None
    runtime.service.tracing.client.flush()
    wait_for_all_tracers()
    deadline = time.monotonic() + 10
    while outcome.run_id not in langsmith.received.runs and time.monotonic() < deadline:
        time.sleep(0.05)

    runs = langsmith.received.runs
    root = runs.get(str(outcome.run_id))
    assert root is not None, f"root run {outcome.run_id} not received; got {list(runs)}"
    assert root["name"] == "support_turn"
    assert root["session_name"] == "support-prod"
    assert root.get("parent_run_id") is None
    assert root.get("end_time"), "the root run was closed"
    # The model call is a child run in the same trace.
    children = [r for r in runs.values() if r.get("trace_id") == root["trace_id"]]
    assert any(r.get("run_type") == "llm" for r in children)
    assert langsmith.received.api_keys == {"ls-test-key"}

    with engine.connect() as connection:
        stored = connection.scalars(
            select(Message.run_id).where(
                Message.session_id == "trace-1", Message.role == "assistant"
            )
        ).all()
    assert stored == [outcome.run_id], "the assistant message keeps the run id for feedback"
    engine.dispose()


@pytest.mark.parametrize(
    ("tracing", "key"), [("true", None), ("false", "ls-test-key")], ids=["no-key", "tracing-off"]
)
def test_unconfigured_langsmith_gets_no_call(
    langsmith: FakeLangSmith,
    local_settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tracing: str,
    key: str | None,
) -> None:
    # The process environment asks the langsmith library to trace to our server; the app's
    # settings say LangSmith is not fully configured, so nothing may reach it.
    monkeypatch.setenv("LANGSMITH_TRACING", tracing)
    monkeypatch.setenv("LANGSMITH_ENDPOINT", langsmith.url)
    if key:
        monkeypatch.setenv("LANGSMITH_API_KEY", key)
    settings = load_settings(
        **{**local_settings.model_dump(exclude={"langsmith_tracing"}), "database_url": db_url}
    )
    assert not settings.langsmith_enabled
    engine, runtime = _runtime(settings, db_url)
    runtime.service.run_turn(user_id="u2", session_id="trace-off", message="Hello")
    wait_for_all_tracers()
    time.sleep(0.3)
    assert langsmith.received.requests == []
    engine.dispose()
