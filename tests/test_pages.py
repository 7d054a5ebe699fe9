"""AppTest of the chat page and the cost page, on the real database and model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import text
from streamlit.testing.v1 import AppTest

from data.db import make_engine
from data.demo import generate
from tests.conftest import ROOT, free_port

APP = str(ROOT / "app.py")


@pytest.fixture
def app_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str, local_model_port: int
) -> Iterator[str]:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOCAL_MODEL_PORT", str(local_model_port))
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("METRICS_PORT", "0")
    st.cache_resource.clear()
    st.cache_data.clear()
    yield db_url
    st.cache_resource.clear()
    st.cache_data.clear()


def run(at: AppTest) -> AppTest:
    at.run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_chat_page_streams_records_and_resumes(app_env: str) -> None:
    at = run(AppTest.from_file(APP, default_timeout=120))
    assert at.title[0].value == "Support chat"
    at.sidebar.text_input(key="user_id").set_value("carol")
    run(at)
    at.chat_input[0].set_value("Hello, I need help with my order")
    run(at)
    roles = [m.name for m in at.chat_message]
    assert roles == ["user", "assistant"]
    assert at.chat_message[0].markdown[0].value == "Hello, I need help with my order"
    caption = at.chat_message[1].caption[0].value
    engine = make_engine(app_env)
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT input_tokens, output_tokens, session_id FROM model_calls")
        ).one()
    assert caption.startswith(f"{row[0]:,} in · {row[1]:,} out tokens · $0.000000 · ")
    # The session is now listed and selected, so a fresh visit can resume it.
    session_box = at.sidebar.selectbox(key="session_choice")
    assert session_box.value == row[2]
    fresh = run(AppTest.from_file(APP, default_timeout=120))
    fresh.sidebar.text_input(key="user_id").set_value("carol")
    run(fresh)
    fresh.sidebar.selectbox(key="session_choice").set_value(row[2])
    run(fresh)
    assert [m.name for m in fresh.chat_message] == ["user", "assistant"]
    engine.dispose()


def test_chat_page_rejects_a_blank_message(app_env: str) -> None:
    at = run(AppTest.from_file(APP, default_timeout=60))
    at.chat_input[0].set_value(" \x00 ")
    run(at)
    assert at.warning[0].value == "The message is empty."
    engine = make_engine(app_env)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM messages")).scalar_one() == 0
    engine.dispose()


def test_cost_page_totals_equal_an_independent_sql_sum(app_env: str) -> None:
    engine = make_engine(app_env)
    generate(
        engine=engine,
        days=10,
        users=20,
        sessions=100,
        calls=1_500,
        seed=5,
        end=datetime.now(UTC) - timedelta(days=3),
    )
    at = run(AppTest.from_file(APP, default_timeout=60))
    at.switch_page("pages/cost.py")
    run(at)
    with engine.connect() as connection:
        calls, tokens, cost = connection.execute(
            text(
                "SELECT count(*), sum(input_tokens + output_tokens), sum(cost_usd) FROM model_calls"
            )
        ).one()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Model calls"] == f"{calls:,}"
    token_card = next(m for m in at.metric if m.label == "Tokens")
    assert token_card.help.startswith(f"{tokens:,} tokens: ")
    assert float(token_card.value.rstrip("MB")) * 1e6 == pytest.approx(tokens, rel=0.01)
    assert metrics["Cost (USD)"] == f"${cost:,.4f}"
    assert metrics["Unpriced calls"] == "0"
    table = at.dataframe[0].value
    assert int(table["calls"].sum()) == calls
    assert table["cost_usd"].sum() == pytest.approx(cost)
    assert len(at.get("plotly_chart")) == 2
    # A range with no calls explains itself instead of showing zeros.
    at.sidebar.selectbox(key="cost_range").set_value("Last 24 hours")
    run(at)
    assert "No model calls between" in at.info[0].value
    engine.dispose()


def test_cost_page_empty_database_says_what_to_do(app_env: str) -> None:
    at = run(AppTest.from_file(APP, default_timeout=60))
    at.switch_page("pages/cost.py")
    run(at)
    assert "No model calls are recorded yet" in at.info[0].value
    assert "make demo" in at.info[0].value
    assert not at.metric


def test_bad_setting_shows_one_line_not_a_traceback(
    app_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METRICS_PORT", "123456")
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert at.error[0].value.startswith(
        "agent-chatbase cannot start: Invalid setting METRICS_PORT='123456'"
    )


def test_chat_page_names_an_unreachable_model_and_keeps_the_message(
    app_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = free_port()
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{dead}/v1")
    monkeypatch.setenv("CHAT_MODEL", "acme-llm")
    monkeypatch.setenv("CHAT_MODEL_CONTEXT_WINDOW", "8000")
    at = run(AppTest.from_file(APP, default_timeout=60))
    at.chat_input[0].set_value("Where is my parcel?")
    run(at)
    assert at.error[0].value.startswith(
        f"The chat model (acme-llm at http://127.0.0.1:{dead}/v1) is unreachable"
    )
    engine = make_engine(app_env)
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT role, content FROM messages")).all()
    assert kept == [("user", "Where is my parcel?")]
    engine.dispose()


def test_chat_page_explains_a_model_without_a_known_window(
    app_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("CHAT_MODEL", "acme-llm")
    at = run(AppTest.from_file(APP, default_timeout=60))
    assert at.error[0].value == (
        "The chat model is unavailable: CHAT_MODEL='acme-llm' has no known input window; "
        "set CHAT_MODEL_CONTEXT_WINDOW"
    )
    assert not at.chat_input


def test_pages_name_an_unreachable_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("METRICS_PORT", "0")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/x")
    st.cache_resource.clear()
    for page in ("pages/chat.py", "pages/cost.py"):
        at = AppTest.from_file(APP, default_timeout=60).run()
        if page != "pages/chat.py":
            at.switch_page(page).run()
        assert not at.exception
        message = at.error[0].value
        assert message.startswith("The database Postgres (127.0.0.1:"), message
        assert "s3cret" not in message
    st.cache_resource.clear()
