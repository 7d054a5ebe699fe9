"""AppTest of every page, on the real database and model."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import Engine, text
from streamlit.testing.v1 import AppTest

from data.store.db import make_engine
from tests.helpers.analyst_pages import open_page, sql
from tests.helpers.pages import run, session_box_of
from tests.helpers.servers import APP, free_port


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
            text(
                "SELECT input_tokens, output_tokens, session_id FROM model_calls"
                " WHERE purpose = 'chat'"
            )
        ).one()
    assert caption.startswith(f"{row[0]:,} in · {row[1]:,} out tokens · $0.000000 · ")
    # The session is now listed and selected, so a fresh visit can resume it.
    session_box = session_box_of(at)
    assert session_box.value == row[2]
    fresh = run(AppTest.from_file(APP, default_timeout=120))
    fresh.sidebar.text_input(key="user_id").set_value("carol")
    run(fresh)
    session_box_of(fresh).set_value(row[2])
    run(fresh)
    assert [m.name for m in fresh.chat_message] == ["user", "assistant"]
    # "End conversation" closes it (the outcome worker judges it next) and starts a new one.
    next(b for b in fresh.button if b.label == "End conversation").click()
    run(fresh)
    with engine.connect() as connection:
        closed = connection.execute(
            text("SELECT closed_at FROM chat_sessions WHERE id = :s"), {"s": row[2]}
        ).scalar()
    assert closed is not None
    assert fresh.info[0].value.startswith("Conversation ended.")
    assert session_box_of(fresh).value == "__new__" and not fresh.chat_message
    engine.dispose()


def test_chat_page_shows_the_memories_an_answer_used(app_env: str) -> None:
    """A fact told in one session is recalled in a new one, and listed under that answer."""
    at = run(AppTest.from_file(APP, default_timeout=120))
    at.sidebar.text_input(key="user_id").set_value("dora")
    run(at)
    at.chat_input[0].set_value("My order B-7731 never arrived, the tracking stopped in Lyon.")
    run(at)
    first = at.chat_message[1]
    assert first.expander[0].label.startswith("0 memories used")  # nothing known yet
    # A new session of the same customer.
    session_box_of(at).set_value("__new__")
    run(at)
    at.chat_input[0].set_value("Any news about my order B-7731 that never arrived?")
    run(at)
    answer = at.chat_message[-1]
    label = answer.expander[0].label
    assert re.match(r"[1-9]\d* memor(y|ies) used", label), label
    listed = " ".join(m.value for m in answer.expander[0].markdown)
    assert "B-7731" in listed and "Memories recalled" in listed


@pytest.mark.parametrize("blank", [" \x00 ", "\u200b\u200b\u200b", "\u3164 \ufeff\u2060"])
def test_chat_page_rejects_a_blank_message(app_env: str, blank: str) -> None:
    """Blank, control and invisible characters (zero-width spaces, fillers) alike."""
    at = run(AppTest.from_file(APP, default_timeout=60))
    at.chat_input[0].set_value(blank)
    run(at)
    assert at.warning[0].value == "The message is empty."
    assert not at.chat_input[0].disabled, "the input is back on"
    engine = make_engine(app_env)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM messages")).scalar_one() == 0
    engine.dispose()


def test_cost_page_numbers_equal_independent_sql(demo: Engine) -> None:
    at = open_page("pages/cost.py", range="30d")
    calls, tokens, cost, users, sessions = sql(
        demo,
        "SELECT count(*), sum(input_tokens + output_tokens), sum(cost_usd),"
        " count(DISTINCT user_id), count(DISTINCT session_id) FROM model_calls",
    )
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Model calls"] == f"{calls:,}"
    token_card = next(m for m in at.metric if m.label == "Tokens")
    assert token_card.help.startswith(f"{tokens:,} tokens: ")
    assert metrics["Cost (USD)"] == f"${cost:,.4f}"
    assert metrics["Cost / user"] == f"${cost / users:,.4f}"
    assert metrics["Cost / conversation"] == f"${cost / sessions:,.4f}"
    assert metrics["Unpriced calls"] == "0"
    by_model = at.dataframe[0].value
    assert int(by_model["calls"].sum()) == calls
    assert by_model["cost_usd"].sum() == pytest.approx(cost)
    # Every user and session (not a top 5), a page at a time, sorted in the database.
    users_page, sessions_page = at.dataframe[1].value, at.dataframe[2].value
    assert len(users_page) == min(50, users) and len(sessions_page) == min(50, sessions)
    assert users_page["cost_usd"].is_monotonic_decreasing
    captions = [c.value for c in at.caption]
    assert any(c.startswith(f"Users 1–{len(users_page)} of {users:,}") for c in captions)
    assert any(c.startswith(f"Sessions 1–{len(sessions_page)} of {sessions:,}") for c in captions)
    assert "demo rows" in at.warning[0].value  # the demo history says so
    assert len(at.get("plotly_chart")) == 2
    assert st_query(at) == {"range": "30d"}


def st_query(at: AppTest) -> dict[str, object]:
    return {k: v for k, v in at.query_params.items()}


def test_cost_page_filters_from_the_url(demo: Engine) -> None:
    at = open_page("pages/cost.py", range="30d", model=["gpt-4o", "gpt-9"], user="demo-user-001")
    assert at.warning[0].value == "Unknown model 'gpt-9' removed from the filter."
    calls, cost = sql(
        demo,
        "SELECT count(*), sum(cost_usd) FROM model_calls"
        " WHERE model = 'gpt-4o' AND user_id = 'demo-user-001'",
    )
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Model calls"] == f"{calls:,}"
    assert metrics["Cost (USD)"] == f"${cost:,.4f}"
    assert at.sidebar.multiselect(key="f_models").value == ["gpt-4o"]
    # The corrected filters are written back, so the link now reproduces the view.
    assert at.query_params["model"] in ("gpt-4o", ["gpt-4o"])


def test_cost_page_empty_range_explains_itself(demo: Engine) -> None:
    at = open_page("pages/cost.py", range="24h")
    assert "No model calls match these filters" in at.info[0].value
    assert not at.metric


def test_cost_page_bad_dates_are_corrected(demo: Engine) -> None:
    at = open_page("pages/cost.py", range="custom", **{"from": "2026-99-01", "to": "x"})
    assert at.warning[0].value.startswith("Could not read the date '2026-99-01'")
    assert at.sidebar.selectbox(key="f_range").value == "7d"


def test_cost_page_drills_down_to_a_conversation(demo: Engine) -> None:
    at = open_page("pages/cost.py", range="30d")
    session = at.dataframe[2].value.iloc[0]["session"]
    at.switch_page("pages/conversation.py")
    at.query_params["session"] = session
    run(at)
    assert at.title[0].value == "Conversation"
    turns = sql(demo, "SELECT count(*) FROM messages WHERE session_id = :s", s=session)[0]
    assert len(at.chat_message) == turns > 0


def test_context_page_numbers(demo: Engine) -> None:
    at = open_page("pages/context.py", range="30d")
    chat, above = sql(
        demo,
        "SELECT count(*), sum(CASE WHEN 100.0 * context_tokens /"
        " context_window >= 75 THEN 1 ELSE 0 END) FROM model_calls"
        " WHERE purpose = 'chat' AND status = 'ok'",
    )
    folds, summarizer_cost = sql(
        demo, "SELECT count(*), sum(cost_usd) FROM model_calls WHERE purpose = 'summarize'"
    )
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Chat calls"] == f"{chat:,}"
    assert metrics["At or above 75%"] == f"{100 * int(above) / chat:.2f}%"
    assert metrics["Summarizations"] == f"{folds:,}"
    assert metrics["Summarizer cost"] == f"${float(summarizer_cost or 0):,.4f}"
    ranked = at.dataframe[0].value
    peak = sql(
        demo,
        "SELECT max(100.0 * context_tokens / context_window) FROM model_calls"
        " WHERE purpose = 'chat' AND status = 'ok'",
    )[0]
    assert ranked["peak_context_percent"].iloc[0] == pytest.approx(float(peak))
    assert len(at.get("plotly_chart")) >= 3  # histogram, over time, growth curve


def test_latency_page_from_the_database(demo: Engine) -> None:
    at = open_page(
        "pages/latency.py",
        range="custom",
        model="gpt-4o-mini",
        **{
            "from": (date.today() - timedelta(days=8)).isoformat(),
            "to": (date.today() - timedelta(days=6)).isoformat(),
        },
    )
    assert any("Source: database" in m.value for m in at.markdown)
    start = datetime.combine(date.today() - timedelta(days=8), time(), UTC)
    end = datetime.combine(date.today() - timedelta(days=5), time(), UTC)
    summary = at.dataframe[0].value.set_index("model")
    n = sql(
        demo,
        "SELECT count(*) FROM model_calls WHERE model = 'gpt-4o-mini'"
        " AND purpose = 'chat' AND status = 'ok' AND ts >= :a AND ts < :b",
        a=start if demo.dialect.name != "sqlite" else start.replace(tzinfo=None),
        b=end if demo.dialect.name != "sqlite" else end.replace(tzinfo=None),
    )[0]
    assert list(summary.index) == ["gpt-4o-mini"] and summary.loc["gpt-4o-mini", "calls"] == n > 0
    # Beyond 3 days only the per-bucket percentiles are shown (exact, from the rollup).
    month = open_page("pages/latency.py", range="30d", model="gpt-4o-mini")
    assert any("up to 3 days" in c.value for c in month.caption)
    slow = month.dataframe[0].value
    top = sql(demo, "SELECT max(latency_ms) FROM model_calls WHERE model = 'gpt-4o-mini'")[0]
    assert slow["latency_ms"].iloc[0] == pytest.approx(float(top))


def test_latency_page_falls_back_when_prometheus_is_down(
    demo: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_URL", f"http://127.0.0.1:{free_port()}")
    at = open_page("pages/latency.py", range="30d")
    # The demo-rows notice comes first; the Prometheus one is among the warnings.
    (down,) = [w.value for w in at.warning if "is unreachable" in w.value]
    assert "showing percentiles computed in the database" in down
    assert any("Source: database" in m.value for m in at.markdown)


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
    assert at.chat_input[0].disabled, "nothing can be sent to a model that is not there"


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


def test_latency_page_shows_tool_calls_and_explains_missing_recall(demo: Engine) -> None:
    from data.store.recorder import record_event
    from data.store.records import EventRecord

    now = datetime.now(UTC) - timedelta(days=4)
    for i in range(30):
        record_event(
            engine=demo,
            event=EventRecord(
                user_id="demo-user-001",
                session_id="demo-5-00001",
                turn=1,
                kind="tool_call",
                name="order_lookup" if i % 2 else "search_faq",
                latency_ms=40.0 + i,
                ts=now,
            ),
        )
    at = open_page("pages/latency.py", range="7d")
    at.segmented_control(key="latency_metric").set_value("tool")
    run(at)
    spec = at.get("plotly_chart")[0].proto.spec
    assert "order_lookup" in spec and "search_faq" in spec and "Tool calls (ms)" in spec
    at.segmented_control(key="latency_metric").set_value("memory")
    run(at)
    assert at.info[0].value.startswith("No memory recall measurements match these filters.")
    assert "long-term memory search" in at.info[0].value


def test_cost_page_of_a_free_local_model_reads_right(app_env: str) -> None:
    """One conversation on the embedded model ($0), as on a fresh `make run`: the cost cards
    say $0 without a red "new" against an empty previous period, the cost per conversation is
    $0 (not a dash), the cost chart's axis runs from 0 (not -1 to 1) and its bars are as wide
    as their bucket (not hairlines)."""
    import json

    from data.store.recorder import record_calls
    from tests.helpers.records import call

    engine = make_engine(app_env)
    record_calls(
        engine=engine,
        calls=[
            call(provider="local", model="SmolLM2-135M-Instruct", cost_usd=0.0, turn=turn)
            for turn in (1, 2)
        ],
    )
    engine.dispose()
    at = open_page("pages/cost.py", range="24h", grain="hour")
    cards = {m.label: m for m in at.metric}
    assert cards["Cost (USD)"].value == "$0.0000" and not cards["Cost (USD)"].delta
    assert cards["Cost / conversation"].value == "$0.0000"
    assert cards["Cost / user"].value == "$0.0000"
    assert cards["Model calls"].delta == "new: no calls in the previous period"
    assert cards["Model calls"].proto.color == 2  # GRAY: neither good nor bad
    cost_chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert cost_chart["layout"]["yaxis"]["range"] == [0, 1]
    assert "Every value in this range is 0" in cost_chart["layout"]["annotations"][0]["text"]
    tokens_chart = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert tokens_chart["layout"]["yaxis"]["rangemode"] == "tozero"
    for bar in cost_chart["data"] + tokens_chart["data"]:
        assert bar["width"] == 0.8 * 3_600_000, "an hour's bar is most of an hour wide"
