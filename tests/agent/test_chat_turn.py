"""One real chat turn on the embedded model: the row, /metrics, and resuming the session."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import text

from agent.runtime import build_runtime
from data.config.settings import Settings, load_settings
from data.integrations.metrics import start_exporter
from data.store.db import make_engine
from data.store.migrate import upgrade
from tests.helpers.servers import free_port

pytestmark = pytest.mark.model


def scrape_calls(port: int) -> float:
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    pattern = (
        r'^agent_calls_total\{model="SmolLM2-135M-Instruct",purpose="chat",status="ok"\} (\S+)$'
    )
    found = re.findall(pattern, body, re.M)
    return float(found[0]) if found else 0.0


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, local_settings: Settings) -> Settings:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_server_url")
        return load_settings(**{**local_settings.model_dump(), "database_url": url})
    return local_settings


def test_real_turn_is_recorded_exported_and_resumable(settings: Settings) -> None:
    upgrade(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    metrics_port = free_port()
    assert start_exporter(host="127.0.0.1", port=metrics_port)
    before = scrape_calls(metrics_port)

    runtime = build_runtime(settings, engine=engine)
    session_id = f"it-{engine.dialect.name}"
    chunks: list[str] = []
    from agent.service import TurnOutcome

    outcome = TurnOutcome(session_id=session_id)
    for chunk in runtime.service.stream_turn(
        user_id="alice",
        session_id=session_id,
        message="Hello, I need help with my order",
        outcome=outcome,
    ):
        chunks.append(chunk)
    assert len(chunks) > 1, "the answer must stream in several chunks"
    assert outcome.text and outcome.turn == 1

    with engine.connect() as connection:
        [row] = connection.execute(
            text("SELECT * FROM model_calls WHERE session_id = :s AND purpose = 'chat'"),
            {"s": session_id},
        ).mappings()
    assert row["input_tokens"] > 0 and row["output_tokens"] > 0
    # The cap reaches the server (llama.cpp ignores max_completion_tokens); +1 for the end token.
    assert row["output_tokens"] <= settings.local_model_max_tokens + 1
    assert row["latency_ms"] > 0 and 0 < row["ttft_ms"] <= row["latency_ms"]
    assert row["cost_usd"] == 0 and row["cost_status"] == "computed"
    assert row["usage_source"] == "counted" and row["purpose"] == "chat"
    assert row["context_window"] == settings.local_model_ctx - settings.local_model_max_tokens
    assert row["user_id"] == "alice" and row["turn"] == 1
    assert scrape_calls(metrics_port) == before + 1

    # A new runtime (as after an app restart) resumes the session from the checkpointer.
    engine.dispose()
    engine = make_engine(settings.sqlalchemy_url)
    restarted = build_runtime(settings, engine=engine)
    state = restarted.service.agent.get_state({"configurable": {"thread_id": session_id}})
    texts = [m.text for m in state.values["messages"]]
    assert texts[0] == "Hello, I need help with my order" and texts[1] == outcome.text
    second = restarted.service.run_turn(
        user_id="alice", session_id=session_id, message="My order number is 10432."
    )
    assert second.turn == 2
    with engine.connect() as connection:
        inputs = (
            connection.execute(
                text(
                    "SELECT input_tokens FROM model_calls"
                    " WHERE session_id = :s AND purpose = 'chat' ORDER BY turn"
                ),
                {"s": session_id},
            )
            .scalars()
            .all()
        )
    # The second request carries the first turn, so it is longer by at least that turn.
    assert inputs[1] > inputs[0] + row["output_tokens"]
    engine.dispose()


def test_counted_tokens_match_what_the_server_reports(local_model_port: int) -> None:
    """The streamed-usage fallback counts the same prompt tokens the server bills."""
    from agent.local_server import chatml, count_tokens

    messages = [("system", "You are a support agent."), ("user", "Where is my parcel?")]
    response = httpx.post(
        f"http://127.0.0.1:{local_model_port}/v1/chat/completions",
        json={"messages": [{"role": r, "content": c} for r, c in messages], "max_tokens": 24},
        timeout=60,
    ).json()
    assert count_tokens(local_model_port, chatml(messages)) == response["usage"]["prompt_tokens"]
    completion = response["choices"][0]["message"]["content"]
    assert (
        abs(count_tokens(local_model_port, completion) - response["usage"]["completion_tokens"])
        <= 1
    )


def test_unreachable_model_gives_one_clear_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from agent.service import DependencyError

    dead = free_port()
    settings = load_settings(
        data_dir=tmp_path,
        openai_base_url=f"http://127.0.0.1:{dead}/v1",
        chat_model_context_window=8000,
        metrics_port=0,
    )
    upgrade(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    runtime = build_runtime(settings, engine=engine)
    with pytest.raises(
        DependencyError, match=rf"127.0.0.1:{dead}/v1\) is unreachable: Connection error\. Your"
    ):
        runtime.service.run_turn(user_id="bob", session_id="s-dead", message="hi")
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT role, content FROM messages")).all()
        failed = connection.execute(text("SELECT status FROM model_calls")).scalars().all()
    assert kept == [("user", "hi")]  # the user's message is not lost
    assert failed and set(failed) == {"error"}
