"""AppTest of the budgets on the Cost page and of the Budgets page, checked against SQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from streamlit.testing.v1 import AppTest

from agent.budget import BudgetExceeded
from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase
from data.store.db import make_engine
from data.workflows import budgets
from tests.helpers.budgets import build_service
from tests.helpers.pages import run
from tests.helpers.servers import APP


def open_page(page: str, **query: str) -> AppTest:
    at = run(AppTest.from_file(APP, default_timeout=90))
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(page)
    return run(at)


def test_cost_page_shows_the_budget_that_stopped_a_scripted_user(
    app_env: str, tmp_path: Path, shared_embedder: Embedder, shared_knowledge: KnowledgeBase
) -> None:
    engine = make_engine(app_env)
    service, _ = build_service(engine, tmp_path, shared_embedder, shared_knowledge)
    budgets.create_budget(
        engine=engine,
        scope_kind="user",
        scope_value="scripted-2",
        period="month",
        limit_usd=0.001,
        actor="admin",
    )
    with pytest.raises(BudgetExceeded):
        for turn in range(40):
            service.run_turn(user_id="scripted-2", session_id="p-1", message=f"Question {turn}")
    with engine.connect() as connection:
        spent = connection.execute(
            text("SELECT sum(cost_usd) FROM model_calls WHERE user_id = 'scripted-2'")
        ).scalar_one()
    engine.dispose()

    at = open_page("pages/cost.py", range="24h")
    assert [s.value for s in at.subheader if s.value == "Budgets"] == ["Budgets"]
    table = next(d.value for d in at.dataframe if "scope" in d.value.columns)
    row = table.set_index("scope").loc["user:scripted-2"]
    assert row["spent_usd"] == pytest.approx(spent)
    assert row["limit_usd"] == 0.001 and row["status"] == "limit reached"
    near = next(d.value for d in at.dataframe if "user_id" in d.value.columns)
    assert list(near["user_id"]) == ["scripted-2"]
    assert near["spent_usd"].iloc[0] == pytest.approx(spent)


def test_budgets_page_adds_changes_and_records_each_change(app_env: str) -> None:
    at = open_page("pages/budgets.py")
    assert at.title[0].value == "Budgets"
    at.sidebar.text_input(key="reviewer_input").set_value("Ann Admin")
    run(at)
    at.radio(key="b_kind").set_value("prefix")
    at.text_input(key="b_value").set_value("team-a-")
    at.number_input[0].set_value(25.0)
    at.button[0].click()  # "Add budget" (the form's submit button)
    run(at)
    engine = make_engine(app_env)
    made = budgets.list_budgets(engine=engine)
    assert [(b.scope, b.period, b.limit_usd, b.warn_fraction) for b in made] == [
        ("prefix:team-a-", "day", 25.0, 0.8)
    ]
    # A second one for the same scope and period is refused with a clear message.
    at.radio(key="b_kind").set_value("prefix")
    at.text_input(key="b_value").set_value("team-a-")
    at.button[0].click()
    run(at)
    assert any("already" in e.value for e in at.error)
    assert len(budgets.list_budgets(engine=engine)) == 1
    history = budgets.history(engine=engine)
    assert list(history["actor"]) == ["Ann Admin"] and list(history["action"]) == ["create"]
    shown = next(d.value for d in at.dataframe if "actor" in d.value.columns)
    assert list(shown["action"]) == ["create"]
    # Change the amount, then remove the budget: both land in the history.
    at.number_input[1].set_value(40.0)
    next(b for b in at.button if b.label == "Save").click()
    run(at)
    assert [b.limit_usd for b in budgets.list_budgets(engine=engine)] == [40.0]
    next(b for b in at.button if b.label == "Remove budget").click()
    run(at)
    assert budgets.list_budgets(engine=engine) == []
    assert list(budgets.history(engine=engine)["action"]) == ["delete", "update", "create"]
    shown = next(d.value for d in at.dataframe if "actor" in d.value.columns)
    assert list(shown["action"]) == ["delete", "update", "create"]
    engine.dispose()


def test_chat_page_shows_the_budget_warning_then_the_refusal(app_env: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from data.store.orm import ModelCall
    from tests.helpers.budgets import call_row

    engine = make_engine(app_env)
    with engine.begin() as connection:
        connection.execute(insert(ModelCall), [call_row("guest", datetime.now(UTC), 0.45)])
    budgets.create_budget(
        engine=engine,
        scope_kind="user",
        scope_value="guest",
        period="day",
        limit_usd=0.5,
        actor="admin",
    )
    at = run(AppTest.from_file(APP, default_timeout=120))
    at.chat_input[0].set_value("Hello, where is my order?")
    run(at)
    assert [m.name for m in at.chat_message] == ["user", "assistant"]  # the turn went ahead
    assert any("Budget warning: user:guest" in w.value for w in at.warning)
    with engine.begin() as connection:
        connection.execute(insert(ModelCall), [call_row("guest", datetime.now(UTC), 0.1)])
    at.chat_input[0].set_value("And my refund?")
    run(at)
    refusal = [e.value for e in at.error]
    assert refusal and refusal[0].startswith("This message was not sent: the day budget")
    with engine.connect() as connection:
        # No model call for the refused turn (turn 2); the first turn's memory writer may
        # still be embedding its facts in the background, so rows of turn 1 can still arrive.
        refused_turn = connection.execute(
            text("SELECT count(*) FROM model_calls WHERE user_id = 'guest' AND turn = 2")
        ).scalar_one()
        assert refused_turn == 0
    engine.dispose()
