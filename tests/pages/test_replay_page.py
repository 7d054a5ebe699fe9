"""AppTest of the summarization replay page on sessions the real agent recorded, checked
against the replay functions called directly."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from agent import replay, replay_sweep
from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase
from data.analytics import replay_sessions as recorded_data
from data.config.settings import get_settings
from data.store.db import make_engine
from tests.helpers.pages import run
from tests.helpers.replay import KEEP, TRIGGER, everything, record_sessions
from tests.helpers.servers import APP


def test_replay_page_compares_recommends_and_matches_the_replay(
    app_env: str, tmp_path: Path, shared_embedder: Embedder, shared_knowledge: KnowledgeBase
) -> None:
    engine = make_engine(app_env)
    sessions = record_sessions(engine, tmp_path, shared_embedder, shared_knowledge)
    at = run(AppTest.from_file(APP, default_timeout=120))
    at.query_params["range"] = "24h"
    at.switch_page("pages/replay.py")
    run(at)
    assert at.title[0].value == "Summarization replay"
    assert "press **Replay**" in at.info[0].value  # the empty state says what to do
    at.number_input(key="r_trigger").set_value(TRIGGER)
    at.number_input(key="r_keep").set_value(KEEP)
    at.number_input(key="r_max_folds").set_value(5.0)
    at.button[0].click()  # the form's Replay button
    run(at)
    assert not at.error, [e.value for e in at.error]

    # The same replay, called directly.
    assert recorded_data.session_ids(engine=engine, filters=everything()) == sessions
    traces = recorded_data.load_traces(engine=engine, sessions=sessions)
    ratio = recorded_data.summary_ratio(traces)
    assert ratio is not None
    setting = replay.Setting(trigger_value=TRIGGER, keep_value=KEEP)
    convos = [replay.conversation(t) for t in traces]
    simulated = replay_sweep.figures(replay.replay(convos, setting, ratio=ratio) or [])
    actual = replay_sweep.figures([replay.recorded(t, setting) for t in traces])
    table = next(d.value for d in at.dataframe if "figure" in d.value.columns).set_index("figure")
    assert table.loc["Sessions", "simulated"] == len(sessions)
    assert table.loc["Cost (USD)", "recorded"] == pytest.approx(actual.cost_usd)
    assert table.loc["Cost (USD)", "simulated"] == pytest.approx(simulated.cost_usd)
    assert table.loc["Summarizations per session", "simulated"] == pytest.approx(
        simulated.summarizations_per_session
    )
    assert table.loc["Context % p95", "simulated"] == pytest.approx(simulated.context_p95)
    assert table.loc["Input tokens billed", "recorded"] == actual.input_tokens

    # The sweep and its recommendation: the cheapest grid setting within the cap.
    grid = next(d.value for d in at.dataframe if "keep_messages" in d.value.columns)
    assert len(grid) == len(replay.TRIGGER_GRID) * len(replay.KEEP_GRID)
    expected = replay_sweep.sweep(convos, setting, ratio=ratio)
    assert expected is not None
    assert list(grid["cost_usd"]) == pytest.approx(list(expected["cost_usd"]))
    current = replay.Setting(
        trigger_value=get_settings().summary_trigger_fraction,
        keep_value=get_settings().summary_keep_messages,
    )
    baseline = replay_sweep.figures(replay.replay(convos, current, ratio=ratio) or []).cost_usd
    assert baseline is not None
    pick = replay_sweep.recommend(expected, baseline_cost_usd=baseline, max_summarizations=5.0)
    assert pick is not None
    assert at.success[0].value.startswith(f"Recommended: {pick.setting}.")
    assert f"a saving of ${pick.saving_usd:,.4f}" in at.success[0].value
    engine.dispose()


def test_replay_page_says_when_nothing_matches(app_env: str) -> None:
    at = run(AppTest.from_file(APP, default_timeout=120))
    at.switch_page("pages/replay.py")
    run(at)
    # An empty database: the analyst pages' own empty state, no traceback.
    assert any("No model calls are recorded yet" in i.value for i in at.info)
