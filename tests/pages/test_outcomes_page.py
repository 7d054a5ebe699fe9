"""The Outcomes page in an AppTest on both databases: its rates against SQL of their own, the
empty state, the outcome filter in the URL (and a hostile one), and the judge's calibration
banner before and after 30 reviewer labels."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from streamlit.testing.v1 import AppTest

from data.store.db import make_engine
from data.store.demo import generate
from data.workers.outcome_judge import OutcomeWorker
from tests.helpers.analyst_pages import open_page, sql
from tests.helpers.outcomes import (
    ScriptedJudge,
    chat_call,
    cohen_kappa,
    converse,
    label,
    later,
    nominal_alpha,
)
from tests.helpers.pages import run

PLAN = {
    "r1": "resolved",
    "r2": "resolved",
    "r3": "resolved",
    "r4": "resolved",
    "e1": "escalated",
    "a1": "abandoned",
    "u1": "unresolved",
}


@pytest.fixture
def judged(app_env: str) -> Iterator[Engine]:
    engine = make_engine(app_env)
    for i, session_id in enumerate(PLAN):
        converse(engine, session_id, [("Where is my order?", "On its way.")])
        chat_call(engine, session_id, cost=0.01 * (i + 1), context=1000 * (i + 1))
    chat_call(engine, "r1", purpose="summarize", cost=0.002)
    OutcomeWorker(engine, ScriptedJudge(by_session=PLAN), clock=lambda: later(31)).run_once()
    yield engine
    engine.dispose()


def tab(at: AppTest, label: str) -> AppTest:
    """The page with another of its tabs opened (each tab runs its queries only when open)."""
    at.session_state["outcomes_tab"] = label
    return run(at)


def test_rates_equal_independent_sql(judged: Engine) -> None:
    at = open_page("pages/outcomes.py", range="7d")
    cards = {m.label: m.value for m in at.metric}
    ended, resolved, escalated, abandoned = sql(
        judged,
        "SELECT count(*), sum(CASE WHEN outcome = 'resolved' THEN 1 ELSE 0 END),"
        " sum(CASE WHEN outcome = 'escalated' THEN 1 ELSE 0 END),"
        " sum(CASE WHEN outcome = 'abandoned' THEN 1 ELSE 0 END)"
        " FROM conversation_outcomes WHERE current AND outcome <> 'unjudged'",
    )
    (cost,) = sql(
        judged, "SELECT sum(cost_usd) FROM model_calls WHERE purpose IN ('chat', 'summarize')"
    )
    assert (ended, resolved) == (7, 4)
    assert cards["Automated resolution"] == f"{100 * resolved / ended:.1f}%"
    assert cards["Escalation"] == f"{100 * escalated / ended:.1f}%"
    assert cards["Abandonment"] == f"{100 * abandoned / ended:.1f}%"
    assert cards["Involvement"] == "100.0%"
    assert cards["Cost per resolved"] == f"${cost / resolved:,.4f}"
    assert cards["Reopened"] == "0.0%"
    # Calibration: no reviewer label yet, so the page says the judge is not checked.
    assert "not calibrated yet: 0 of the 30" in at.warning[-1].value
    # Only the open tab (Rates) ran its queries: one table on the page.
    assert len(at.dataframe) == 1
    table = tab(at, "Ended conversations").dataframe[-1].value
    assert sorted(table["session_id"]) == sorted(PLAN)
    # The Cost page shows the same cost per resolved conversation.
    costs = {m.label: m.value for m in open_page("pages/cost.py", range="7d").metric}
    assert costs["Cost / resolved conversation"] == f"${cost / resolved:,.4f}"


def test_the_outcome_filter_comes_from_the_url(judged: Engine) -> None:
    # A link with an outcome opens on the table it filters.
    at = open_page("pages/outcomes.py", range="7d", outcome="resolved")
    assert sorted(at.dataframe[-1].value["session_id"]) == ["r1", "r2", "r3", "r4"]
    hostile = open_page("pages/outcomes.py", range="7d", outcome="<img src=x onerror=alert(1)>")
    assert any("Unknown outcome" in w.value for w in hostile.warning)
    assert len(hostile.dataframe[-1].value) == len(PLAN)
    assert not any("<img" in (m.value or "") for m in hostile.markdown)


def test_an_untrusted_judge_is_said_plainly(judged: Engine) -> None:
    reviewers = ["ana", "ben", "chloe", "dan", "eve"]
    judge_said, reviewers_said = [], []
    for session_id, outcome in PLAN.items():
        for reviewer in reviewers:
            # The reviewers call every conversation unresolved except the escalated one.
            theirs = "escalated" if outcome == "escalated" else "unresolved"
            label(judged, session_id, reviewer, theirs, "order status")
            judge_said.append(outcome)
            reviewers_said.append(theirs)
    kappa = cohen_kappa(judge_said, reviewers_said)
    assert kappa is not None and len(judge_said) == 35
    at = tab(open_page("pages/outcomes.py", range="7d"), "Calibration")
    (error,) = at.error
    assert "cannot be trusted yet" in error.value
    assert f"Cohen's κ = {kappa:.2f}" in error.value and "On 35 conversations" in error.value
    cards = {m.label: m.value for m in at.metric}
    assert cards["Cohen's κ"] == f"{kappa:.3f}"
    assert cards["Labelled pairs"] == "35"
    # α from the counts, against the krippendorff package on the raw labels.
    assert cards["Krippendorff's α (nominal)"] == f"{nominal_alpha(judge_said, reviewers_said):.3f}"
    differ = sum(j != r for j, r in zip(judge_said, reviewers_said, strict=True))
    assert any(f"All {differ} pairs where the two outcomes differ" in c.value for c in at.caption)
    assert len(at.dataframe[-1].value) == differ
    assert not at.toggle  # every disagreement is listed: nothing more to prepare


def test_past_the_listed_disagreements_a_csv_has_them_all(
    judged: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    for session_id in PLAN:
        for reviewer in ["ana", "ben", "chloe"]:
            label(judged, session_id, reviewer, "unresolved", "order status")
    differ = sum(3 for outcome in PLAN.values() if outcome != "unresolved")
    monkeypatch.setattr("data.analytics.outcome_agreement.DISAGREEMENTS_SHOWN", 5)
    at = tab(open_page("pages/outcomes.py", range="7d"), "Calibration")
    assert any(
        f"The latest 5 of {differ} pairs where the two outcomes differ" in c.value
        for c in at.caption
    )
    assert len(at.dataframe[-1].value) == 5
    at.toggle(key="o_differ_export").set_value(True)
    run(at)
    assert not at.exception


def test_no_verdict_yet_says_how_outcomes_appear(app_env: str) -> None:
    engine = make_engine(app_env)
    try:
        converse(engine, "fresh", [("Hi", "Hello!")])
        chat_call(engine, "fresh")
        at = open_page("pages/outcomes.py", range="7d")
        assert "No conversation in this range has a verdict yet" in at.info[0].value
        assert "End conversation" in at.info[0].value and not at.metric
    finally:
        engine.dispose()


def test_the_demo_history_rates_read_back_off_the_page(app_env: str) -> None:
    engine = make_engine(app_env)
    try:
        generate(engine=engine, days=10, users=20, sessions=300, calls=3_000, seed=5, outcomes=True)
        at = open_page("pages/outcomes.py", range="30d")
        ended, resolved, escalated = sql(
            engine,
            "SELECT count(*), sum(CASE WHEN outcome = 'resolved' THEN 1 ELSE 0 END),"
            " sum(CASE WHEN outcome = 'escalated' THEN 1 ELSE 0 END)"
            " FROM conversation_outcomes WHERE current AND outcome <> 'unjudged'",
        )
        cards = {m.label: m.value for m in at.metric}
        assert cards["Automated resolution"] == f"{100 * resolved / ended:.1f}%"
        assert cards["Escalation"] == f"{100 * escalated / ended:.1f}%"
        assert 45 <= 100 * resolved / ended <= 75 and 10 <= 100 * escalated / ended <= 30
        assert "demo rows" in at.warning[0].value
        by_day = at.dataframe[0].value
        assert int(by_day["ended"].sum()) == ended
        assert int(by_day["resolved"].sum()) == resolved
    finally:
        engine.dispose()
