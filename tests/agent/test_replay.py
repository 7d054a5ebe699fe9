"""Summarization replay: the honesty check (replaying sessions the real agent recorded, under
the setting they were recorded with, gives back their summarizations and context curve), the
figures against an independent computation, the sweep, the recommendation and cancelling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from agent import replay, replay_sweep
from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase
from data.analytics import replay_sessions as recorded_data
from data.integrations.prices import linear_rate
from data.store.orm import AgentEvent, ModelCall
from tests.helpers.replay import (
    KEEP,
    SESSIONS,
    TRIGGER,
    WINDOW,
    everything,
    record_sessions,
)

# The honesty check's tolerance. Summarizations: each session within one of its recorded count
# (all but one exactly), and the sessions together within one of theirs. Context curve, up to
# the first call where the replay's folds and the recorded ones part: within 5 percentage points
# of the window at every call (a session's first request carries less than the median) and 1.5
# points on average. What the agent adds to a request besides the conversation (system prompt,
# the help-center entry or memories it injects) varies from turn to turn and the replay takes
# the median the recorded folds show, so a fold can come one call earlier or later, and a
# session that ends right at the trigger can fold once more in the replay.
FOLD_TOLERANCE = 1
CURVE_TOLERANCE_POINTS = 5.0
CURVE_MEAN_TOLERANCE_POINTS = 1.5


@pytest.fixture
def recorded(
    engine: Engine, tmp_path: Path, shared_embedder: Embedder, shared_knowledge: KnowledgeBase
) -> Iterator[tuple[Engine, list[recorded_data.Trace]]]:
    sessions = record_sessions(engine, tmp_path, shared_embedder, shared_knowledge)
    yield engine, recorded_data.load_traces(engine=engine, sessions=sessions)


def test_replaying_the_recorded_setting_reproduces_what_was_recorded(
    recorded: tuple[Engine, list[recorded_data.Trace]],
) -> None:
    engine, traces = recorded
    with engine.connect() as connection:
        folds = connection.execute(
            select(func.count()).where(AgentEvent.kind == "summarization")
        ).scalar_one()
    assert folds >= SESSIONS, "the recorded sessions must have been summarized"
    ratio = recorded_data.summary_ratio(traces)
    assert ratio is not None
    setting = replay.Setting(
        trigger_kind="fraction", trigger_value=TRIGGER, keep_kind="messages", keep_value=KEEP
    )
    convos = [replay.conversation(t) for t in traces]
    results = replay.replay(convos, setting, ratio=ratio)
    assert results is not None
    exact = 0
    for trace, result in zip(traces, results, strict=True):
        actual = replay.recorded(trace, setting)
        assert abs(result.folds - trace.folds) <= FOLD_TOLERANCE, trace.session_id
        exact += result.folds == trace.folds
        # Compare the curves up to the first fold that only one of them has.
        parted = next(
            (
                i
                for i in range(len(trace.calls))
                if (i in actual.fold_calls) != (i in result.fold_calls)
            ),
            len(trace.calls),
        )
        gaps = [
            abs(a - s)
            for a, s in zip(
                actual.context_percent[:parted], result.context_percent[:parted], strict=True
            )
        ]
        assert max(gaps) <= CURVE_TOLERANCE_POINTS, (trace.session_id, max(gaps))
        mean = sum(gaps) / len(gaps)
        assert mean <= CURVE_MEAN_TOLERANCE_POINTS, (trace.session_id, mean)
        print(
            f"{trace.session_id}: folds {trace.folds} recorded, {result.folds} replayed; "
            f"curve compared over {parted} of {len(trace.calls)} calls: max gap "
            f"{max(gaps):.2f}, mean gap {mean:.2f} points"
        )
    total = sum(r.folds for r in results)
    assert abs(total - sum(t.folds for t in traces)) <= FOLD_TOLERANCE
    assert exact >= len(traces) - 1
    # The figures side by side agree within the same tolerance.
    simulated = replay_sweep.figures(results)
    actual_figures = replay_sweep.figures([replay.recorded(t, setting) for t in traces])
    assert simulated.summarizations_per_session == pytest.approx(
        actual_figures.summarizations_per_session, abs=FOLD_TOLERANCE / len(traces) + 1e-9
    )
    assert simulated.input_tokens == pytest.approx(actual_figures.input_tokens, rel=0.05)
    assert simulated.cost_usd == pytest.approx(actual_figures.cost_usd, rel=0.05)


def test_the_figures_match_an_independent_computation(
    recorded: tuple[Engine, list[recorded_data.Trace]],
) -> None:
    engine, traces = recorded
    assert [t.session_id for t in traces] == recorded_data.session_ids(
        engine=engine, filters=everything()
    )
    setting = replay.Setting(model="gpt-4.1-mini", window=WINDOW, keep_value=KEEP)
    convos = [replay.conversation(t) for t in traces]
    results = replay.replay(convos, setting, ratio=0.1)
    assert results is not None
    # Recorded side against SQL.
    with engine.connect() as connection:
        chat_in, cost = connection.execute(
            select(
                func.sum(ModelCall.input_tokens),
                func.sum(ModelCall.cost_usd),
            ).where(ModelCall.purpose.in_(("chat", "summarize")))
        ).one()
    actual = replay_sweep.figures([replay.recorded(t, setting) for t in traces])
    assert actual.input_tokens == chat_in
    assert actual.cost_usd == pytest.approx(cost)
    # Simulated cost: every simulated request and summary priced at the chosen model.
    rate = linear_rate("openai", "gpt-4.1-mini")
    assert rate is not None
    for convo, result in zip(convos, results, strict=True):
        requests = [p * WINDOW / 100 for p in result.context_percent]
        chat_cost = sum(
            ((r - min(c.cached_tokens, r)) * rate.input + c.output_tokens * rate.output) / 1e6
            for r, c in zip(requests, convo.trace.calls, strict=True)
        )
        assert result.cost_usd is not None and result.cost_usd >= chat_cost - 1e-12
        assert sum(requests) <= result.input_tokens + 1e-6


def test_sweep_recommends_the_cheapest_setting_within_the_cap_and_can_be_cancelled(
    recorded: tuple[Engine, list[recorded_data.Trace]],
) -> None:
    _, traces = recorded
    convos = [replay.conversation(t) for t in traces]
    base = replay.Setting(keep_value=KEEP)
    grid = replay_sweep.sweep(convos, base, ratio=0.1, triggers=(0.6, 0.8), keeps=(4, 8))
    assert grid is not None and len(grid) == 4
    # More summarizing (an earlier trigger) never costs more input tokens on these sessions.
    by = grid.set_index(["trigger", "keep_messages"])
    assert by.loc[(0.6, 4), "input_tokens"] <= by.loc[(0.8, 4), "input_tokens"]
    baseline = replay_sweep.figures(replay.replay(convos, base, ratio=0.1) or []).cost_usd
    assert baseline is not None
    cap = float(grid["summarizations_per_session"].max())
    pick = replay_sweep.recommend(grid, baseline_cost_usd=baseline, max_summarizations=cap)
    assert pick is not None and pick.cost_usd == grid["cost_usd"].min()
    assert pick.saving_usd == pytest.approx(baseline - pick.cost_usd)
    assert replay_sweep.recommend(grid, baseline_cost_usd=baseline, max_summarizations=-1) is None
    # Cancelling: the progress callback says stop, nothing is returned.
    seen: list[tuple[int, int]] = []

    def stop_after_first(done: int, total: int) -> bool:
        seen.append((done, total))
        return len(seen) < 2

    assert replay_sweep.sweep(convos, base, ratio=0.1, progress=stop_after_first) is None
    assert seen[0] == (0, len(convos) * len(replay.TRIGGER_GRID) * len(replay.KEEP_GRID))


def test_a_bad_setting_is_a_clear_error() -> None:
    with pytest.raises(replay.ReplayError, match="between 0 and 1"):
        replay.Setting(trigger_value=1.5).middleware(1000)
