"""The summarization replay's analysis: a setting's figures against the recorded sessions, the
comparison with what happened, the cost curve over the trigger, a sweep of the grid, and the
recommended setting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from agent.replay import (
    KEEP_GRID,
    TRIGGER_GRID,
    Conversation,
    Progress,
    SessionResult,
    Setting,
    replay,
)
from data.analytics.replay_sessions import Trace


@dataclass(frozen=True, slots=True)
class Figures:
    sessions: int
    calls: int
    summarizations_per_session: float
    input_tokens: int
    cost_usd: float | None
    context_p50: float | None
    context_p95: float | None
    share_at_trigger: float | None


def figures(results: Sequence[SessionResult], *, with_trigger: bool = True) -> Figures:
    percents = np.fromiter((p for r in results for p in r.context_percent), dtype=float)
    calls = int(percents.size)
    costs = [r.cost_usd for r in results]
    return Figures(
        sessions=len(results),
        calls=calls,
        summarizations_per_session=sum(r.folds for r in results) / len(results) if results else 0,
        input_tokens=sum(r.input_tokens for r in results),
        cost_usd=None if any(c is None for c in costs) else float(sum(c or 0 for c in costs)),
        context_p50=float(np.percentile(percents, 50)) if calls else None,
        context_p95=float(np.percentile(percents, 95)) if calls else None,
        share_at_trigger=(sum(r.at_trigger for r in results) / calls)
        if calls and with_trigger
        else None,
    )


def comparison(actual: Figures, simulated: Figures) -> pd.DataFrame:
    """Recorded against simulated, one row per figure."""
    rows = [
        ("Sessions", actual.sessions, simulated.sessions),
        (
            "Summarizations per session",
            actual.summarizations_per_session,
            simulated.summarizations_per_session,
        ),
        ("Input tokens billed", actual.input_tokens, simulated.input_tokens),
        ("Cost (USD)", actual.cost_usd, simulated.cost_usd),
        ("Context % p50", actual.context_p50, simulated.context_p50),
        ("Context % p95", actual.context_p95, simulated.context_p95),
        (
            "Share of calls at or above the trigger (%)",
            None if actual.share_at_trigger is None else 100 * actual.share_at_trigger,
            None if simulated.share_at_trigger is None else 100 * simulated.share_at_trigger,
        ),
    ]
    frame = pd.DataFrame(rows, columns=["figure", "recorded", "simulated"])
    frame["difference"] = [None if a is None or s is None else s - a for _, a, s in rows]
    return frame


def curve(trace: Trace, actual: SessionResult, simulated: SessionResult) -> pd.DataFrame:
    """One session's context % per chat call, recorded and simulated (long form)."""
    calls = list(range(1, len(trace.calls) + 1))
    turns = [c.turn for c in trace.calls]
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "call": calls,
                    "turn": turns,
                    "context_percent": actual.context_percent,
                    "series": "recorded",
                }
            ),
            pd.DataFrame(
                {
                    "call": calls,
                    "turn": turns,
                    "context_percent": simulated.context_percent,
                    "series": "simulated",
                }
            ),
        ],
        ignore_index=True,
    )


def sweep(
    conversations: Sequence[Conversation],
    base: Setting,
    *,
    ratio: float,
    triggers: Sequence[float] = TRIGGER_GRID,
    keeps: Sequence[int] = KEEP_GRID,
    progress: Progress | None = None,
) -> pd.DataFrame | None:
    """Every (fraction trigger, keep messages) pair of the grid on the same sessions: cost,
    summarizations per session and context p95. None when `progress` asked to stop."""
    rows = []
    grid = [(t, k) for t in triggers for k in keeps]
    total = len(grid) * len(conversations)
    for index, (trigger, keep) in enumerate(grid):
        setting = Setting(
            model=base.model,
            window=base.window,
            trigger_kind="fraction",
            trigger_value=trigger,
            keep_kind="messages",
            keep_value=keep,
            summary_model=base.summary_model,
            provider=base.provider,
            keep_budget_fraction=base.keep_budget_fraction,
            summary_max_tokens=base.summary_max_tokens,
        )
        done = index * len(conversations)

        def step(n: int, _: int, done: int = done) -> bool:
            return progress is None or progress(done + n, total)

        results = replay(conversations, setting, ratio=ratio, progress=step)
        if results is None:
            return None
        found = figures(results)
        rows.append(
            {
                "trigger": trigger,
                "keep_messages": keep,
                "setting": setting.label,
                "cost_usd": found.cost_usd,
                "summarizations_per_session": found.summarizations_per_session,
                "context_p95": found.context_p95,
                "input_tokens": found.input_tokens,
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True, slots=True)
class Recommendation:
    setting: str
    trigger: float
    keep_messages: int
    cost_usd: float
    baseline_cost_usd: float
    saving_usd: float
    saving_percent: float
    summarizations_per_session: float


def recommend(
    grid: pd.DataFrame, *, baseline_cost_usd: float, max_summarizations: float
) -> Recommendation | None:
    """The cheapest grid setting that summarizes at most `max_summarizations` times per
    session on average; its saving against `baseline_cost_usd` (the current setting,
    replayed). None when no priced setting qualifies."""
    ok = grid[grid["cost_usd"].notna() & (grid["summarizations_per_session"] <= max_summarizations)]
    if ok.empty:
        return None
    best = ok.sort_values(["cost_usd", "summarizations_per_session"]).iloc[0]
    saving = baseline_cost_usd - float(best["cost_usd"])
    return Recommendation(
        setting=str(best["setting"]),
        trigger=float(best["trigger"]),
        keep_messages=int(best["keep_messages"]),
        cost_usd=float(best["cost_usd"]),
        baseline_cost_usd=baseline_cost_usd,
        saving_usd=saving,
        saving_percent=100 * saving / baseline_cost_usd if baseline_cost_usd else 0.0,
        summarizations_per_session=float(best["summarizations_per_session"]),
    )
