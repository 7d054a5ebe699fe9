"""Summarization replay: pick recorded conversations, a chat model and summarization settings,
and see what those conversations would have cost and how full their context would have been,
side by side with what was recorded, plus a sweep of triggers and keeps with a recommendation.
The replay itself is agent/replay.py (the agent's own SummarizationMiddleware decides)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from agent import replay, replay_sweep
from agent.models import _known_window
from data.analytics import replay_sessions as recorded_data
from data.analytics.filters import Filters
from data.config.settings import get_settings
from pages.ui import charts, common, filtering, signin

common.ensure_routed()
signin.require("replay")

AS_RECORDED = "As recorded (each session's own model)"
SAME = "Same as the chat model"


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def _sessions(
    _engine: Engine, url: str, filters: Filters, sample: int | None, seed: int
) -> list[str]:
    return recorded_data.session_ids(engine=_engine, filters=filters, sample=sample, seed=seed)


@st.cache_data(ttl=300, max_entries=64, show_spinner=False)
def _window(model: str) -> int | None:
    return _known_window(model)


st.title("Summarization replay")
st.caption(
    "Replays recorded conversations under another chat model and other summarization "
    "settings. The decision to summarize, and what is kept, is made by the agent's own "
    "SummarizationMiddleware; token counts come from the recorded calls, and a summary's size "
    "from the recorded summaries."
)
engine, filters = common.analyst_page()
url = common.read_key()
st.caption(filtering.describe_filters(filters))
settings = get_settings()

with st.form("replay_form"):
    left, right = st.columns(2)
    with left:
        pick = st.radio(
            "Conversations",
            ["filters", "sample"],
            format_func={
                "filters": "Every conversation that matches the filters",
                "sample": "A seeded random sample of them",
            }.__getitem__,
            key="r_pick",
        )
        size_col, seed_col = st.columns(2)
        sample_size = size_col.number_input(
            "Sample size", min_value=1, max_value=recorded_data.MAX_SESSIONS, value=200
        )
        seed = seed_col.number_input("Seed", min_value=0, value=7, help="Same seed, same sample")
        model_choice = st.selectbox(
            "Chat model", [AS_RECORDED, *charts.PRICEABLE_MODELS], key="r_model"
        )
        summary_choice = st.selectbox(
            "Summary model", [SAME, *charts.PRICEABLE_MODELS], key="r_summary_model"
        )
    with right:
        trigger_kind = st.segmented_control(
            "Summarize when the request reaches",
            ["fraction", "tokens", "messages"],
            default="fraction",
            format_func={
                "fraction": "a share of the window",
                "tokens": "tokens",
                "messages": "messages",
            }.__getitem__,
            key="r_trigger_kind",
        )
        trigger_value = st.number_input(
            "Trigger (a fraction such as 0.75, or a count)",
            min_value=0.01,
            value=float(settings.summary_trigger_fraction),
            key="r_trigger",
        )
        keep_kind = st.segmented_control(
            "Keep after summarizing",
            ["messages", "tokens"],
            default="messages",
            key="r_keep_kind",
        )
        keep_value = st.number_input(
            "Keep (count)", min_value=1, value=int(settings.summary_keep_messages), key="r_keep"
        )
        max_folds = st.number_input(
            "Recommend only settings with at most this many summarizations per session",
            min_value=0.0,
            value=1.0,
            step=0.25,
            key="r_max_folds",
        )
    started = st.form_submit_button("Replay", icon=":material/replay:", type="primary")

current = replay.Setting.of_agent(settings)


def setting_from_form() -> replay.Setting:
    model = None if model_choice == AS_RECORDED else model_choice
    window = None
    if model is not None:
        window = _window(model)
        if window is None:
            raise replay.ReplayError(f"The input window of {model} is not known.")
    kind = trigger_kind or "fraction"
    value = float(trigger_value) if kind == "fraction" else int(trigger_value)
    if kind == "fraction" and not 0 < value <= 1:
        raise replay.ReplayError("A fraction trigger is between 0 and 1 (for example 0.75).")
    return replay.Setting(
        model=model,
        window=window,
        trigger_kind=kind,  # type: ignore[arg-type]
        trigger_value=value,
        keep_kind=keep_kind or "messages",  # type: ignore[arg-type]
        keep_value=int(keep_value),
        summary_model=None if summary_choice == SAME else summary_choice,
        keep_budget_fraction=settings.summary_keep_budget_fraction,
        summary_max_tokens=settings.max_output_tokens,
    )


def run_replay() -> dict[str, Any] | None:
    """Load, replay, sweep, with progress. Returns None when a step was interrupted."""
    setting = setting_from_form()
    base = replay.Setting.of_agent(
        settings, model=setting.model, window=setting.window, summary_model=setting.summary_model
    )
    sample = int(sample_size) if pick == "sample" else None
    ids = _sessions(engine, url, filters, sample, int(seed))
    if not ids:
        return {"empty": True}
    if len(ids) >= recorded_data.MAX_SESSIONS:
        st.warning(
            f"More than {recorded_data.MAX_SESSIONS:,} conversations match; the first "
            f"{recorded_data.MAX_SESSIONS:,} are replayed. Narrow the filters or take a sample.",
            icon=":material/info:",
        )
    st.session_state["replay_state"] = {"stage": "loading", "done": 0, "total": len(ids)}
    bar = st.progress(0.0, text=f"Loading {len(ids):,} conversations…")
    traces = recorded_data.load_traces(engine=engine, sessions=ids)
    convos = [replay.conversation(t) for t in traces]
    ratio = recorded_data.summary_ratio(traces)
    if ratio is None:
        ratio = recorded_data.summary_ratio(
            recorded_data.load_traces(
                engine=engine,
                sessions=recorded_data.session_ids(
                    engine=engine, filters=filters, sample=500, seed=0
                ),
            )
        )
    if ratio is None:
        raise replay.ReplayError(
            "No summarization is recorded in this range, so a summary's size is unknown. "
            "Widen the date range to include conversations that were summarized."
        )

    def progress(stage: str) -> replay.Progress:
        def update(done: int, total: int) -> bool:
            st.session_state["replay_state"] = {"stage": stage, "done": done, "total": total}
            bar.progress(done / total if total else 1.0, text=f"{stage}: {done:,} of {total:,}")
            return True

        return update

    simulated = replay.replay(convos, setting, ratio=ratio, progress=progress("Replaying"))
    baseline = replay.replay(convos, base, ratio=ratio)
    grid = replay_sweep.sweep(convos, setting, ratio=ratio, progress=progress("Sweep"))
    bar.empty()
    if simulated is None or baseline is None or grid is None:
        return None
    actual = [replay.recorded(t, setting) for t in traces]
    baseline_cost = replay_sweep.figures(baseline).cost_usd
    pick_ = (
        None
        if baseline_cost is None
        else replay_sweep.recommend(
            grid, baseline_cost_usd=baseline_cost, max_summarizations=max_folds
        )
    )
    return {
        "empty": False,
        "setting": setting,
        "base": base,
        "ratio": ratio,
        "event_ratio": recorded_data.event_ratio(traces),
        "traces": traces,
        "actual": actual,
        "simulated": simulated,
        "baseline_cost": baseline_cost,
        "grid": grid,
        "recommendation": pick_,
        "with_trigger": True,
    }


if started:
    st.session_state.pop("replay_result", None)
    st.session_state["replay_running"] = True
    cancel = st.button("Cancel", icon=":material/cancel:", key="r_cancel")
    try:
        result = run_replay()
    except replay.ReplayError as error:
        st.session_state["replay_running"] = False
        st.error(str(error), icon=":material/error:")
        st.stop()
    st.session_state["replay_running"] = False
    st.session_state["replay_result"] = result
    st.rerun()
elif st.session_state.get("replay_running"):
    # The run was interrupted: the Cancel button (or any other widget) started a new run.
    state = st.session_state.get("replay_state", {})
    st.session_state["replay_running"] = False
    st.warning(
        f"Replay cancelled during {state.get('stage', 'loading').lower()} after "
        f"{state.get('done', 0):,} of {state.get('total', 0):,}. Press Replay to start again.",
        icon=":material/cancel:",
    )

result = st.session_state.get("replay_result")
if result is None:
    st.info(
        "Choose conversations and settings above and press **Replay**. The defaults are the "
        "agent's current settings "
        f"({current.label}).",
        icon=":material/info:",
    )
    st.stop()
if result["empty"]:
    st.info(
        "No conversation with a successful chat call matches these filters. Widen the date "
        "range or clear the model, user or session filter.",
        icon=":material/info:",
    )
    st.stop()

setting: replay.Setting = result["setting"]
actual_figures = replay_sweep.figures(result["actual"], with_trigger=result["with_trigger"])
simulated_figures = replay_sweep.figures(result["simulated"], with_trigger=result["with_trigger"])
model_name = setting.model or "each session's recorded model"
st.subheader(f"Replayed on {model_name} · {setting.label}")
st.caption(
    f"{actual_figures.sessions:,} conversations, {actual_figures.calls:,} chat calls. A summary "
    f"is {100 * result['ratio']:.2f} % of the tokens it folds (median recorded summarizer "
    "output ÷ input"
    + (
        f"; recorded folds left {100 * result['event_ratio']:.0f} % of the request"
        if result["event_ratio"] is not None
        else ""
    )
    + "). Recorded cost is what was billed; simulated cost prices every simulated call on the "
    "chosen model with genai-prices."
)
sim, rec = simulated_figures, actual_figures
cards = st.columns(4)
cards[0].metric(
    "Summarizations / session",
    f"{sim.summarizations_per_session:.2f}",
    delta=f"{sim.summarizations_per_session - rec.summarizations_per_session:+.2f} vs recorded",
    delta_color="off",
    border=True,
)
cards[1].metric(
    "Cost (USD)",
    "unpriced" if simulated_figures.cost_usd is None else f"${simulated_figures.cost_usd:,.4f}",
    delta=None
    if simulated_figures.cost_usd is None or not actual_figures.cost_usd
    else f"{100 * (sim.cost_usd - rec.cost_usd) / rec.cost_usd:+.1f}% vs recorded",
    delta_color="inverse",
    border=True,
)
cards[2].metric(
    "Context % p95",
    "–" if simulated_figures.context_p95 is None else f"{simulated_figures.context_p95:.1f}%",
    delta=None
    if simulated_figures.context_p95 is None or actual_figures.context_p95 is None
    else f"{simulated_figures.context_p95 - actual_figures.context_p95:+.1f} points vs recorded",
    delta_color="inverse",
    border=True,
)
cards[3].metric(
    "Input tokens billed",
    common.compact(simulated_figures.input_tokens),
    delta=f"{simulated_figures.input_tokens - actual_figures.input_tokens:+,} vs recorded",
    delta_color="inverse",
    border=True,
)
table = replay_sweep.comparison(actual_figures, simulated_figures)
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        "figure": "Figure",
        "recorded": st.column_config.NumberColumn("Recorded", format="%,.4f"),
        "simulated": st.column_config.NumberColumn("Simulated", format="%,.4f"),
        "difference": st.column_config.NumberColumn("Simulated − recorded", format="%+,.4f"),
    },
    key="replay_comparison",
)
common.csv_download(table, "replay_comparison")

st.subheader("One conversation, call by call")
traces: list[recorded_data.Trace] = result["traces"]
longest = sorted(range(len(traces)), key=lambda i: -len(traces[i].calls))
labels = {
    i: f"{traces[i].session_id} · {len(traces[i].calls)} calls · "
    f"{traces[i].folds} recorded summarizations"
    for i in longest
}
chosen = st.selectbox("Conversation", list(labels), format_func=labels.__getitem__)
line = replay_sweep.curve(traces[chosen], result["actual"][chosen], result["simulated"][chosen])
fig = px.line(
    line,
    x="call",
    y="context_percent",
    color="series",
    markers=True,
    title="Context window used per chat call, recorded and simulated",
    labels={
        "call": "Chat call in the conversation",
        "context_percent": "Request (% of the input window)",
        "series": "",
    },
    hover_data={"turn": True},
)
fig.add_hline(
    y=replay.trigger_percent(setting, traces[chosen]), line_dash="dot", annotation_text="trigger"
)
fig.update_layout(margin={"t": 50, "b": 10})
st.plotly_chart(fig, width="stretch")
common.csv_download(line, "replay_curve")

st.subheader("Sweep: trigger × keep")
grid: pd.DataFrame = result["grid"]
pick_: replay_sweep.Recommendation | None = result["recommendation"]
scatter = go.Figure()
scatter.add_scatter(
    x=grid["summarizations_per_session"],
    y=grid["cost_usd"],
    mode="markers+text",
    text=[f"{t:.0%}/{k}" for t, k in zip(grid["trigger"], grid["keep_messages"], strict=True)],
    textposition="top center",
    name="trigger / keep messages",
    customdata=grid[["setting", "context_p95"]],
    hovertemplate="%{customdata[0]}<br>%{x:.2f} summarizations per session<br>$%{y:,.4f}"
    "<br>context p95 %{customdata[1]:.1f}%<extra></extra>",
)
if pick_ is not None:
    scatter.add_scatter(
        x=[pick_.summarizations_per_session],
        y=[pick_.cost_usd],
        mode="markers",
        marker={"size": 18, "symbol": "star"},
        name="recommended",
        hovertemplate=f"recommended: {pick_.setting}<extra></extra>",
    )
scatter.update_layout(
    title="Cost against summarizations per session, per setting",
    xaxis_title="Summarizations per session (mean)",
    yaxis_title="Cost of the replayed conversations (USD)",
    margin={"t": 50, "b": 10},
)
st.plotly_chart(scatter, width="stretch")
if pick_ is None:
    st.warning(
        f"No setting of the grid summarizes at most {max_folds:g} times per session on these "
        "conversations (or the model is unpriced). Allow more summarizations to get a "
        "recommendation.",
        icon=":material/info:",
    )
else:
    st.success(
        f"Recommended: {pick_.setting}. These conversations would cost "
        f"${pick_.cost_usd:,.4f} instead of ${pick_.baseline_cost_usd:,.4f} at the current "
        f"setting ({result['base'].label}), a saving of ${pick_.saving_usd:,.4f} "
        f"({pick_.saving_percent:.1f} %), with {pick_.summarizations_per_session:.2f} "
        "summarizations per session.",
        icon=":material/recommend:",
    )
st.dataframe(
    grid,
    hide_index=True,
    width="stretch",
    column_config={
        "trigger": st.column_config.NumberColumn("Trigger (share of window)", format="%.2f"),
        "keep_messages": "Keep (messages)",
        "setting": "Setting",
        "cost_usd": st.column_config.NumberColumn("Cost", format="$%.4f"),
        "summarizations_per_session": st.column_config.NumberColumn(
            "Summarizations / session", format="%.2f"
        ),
        "context_p95": st.column_config.NumberColumn("Context % p95", format="%.1f%%"),
        "input_tokens": st.column_config.NumberColumn("Input tokens", format="%,d"),
    },
    key="replay_grid",
)
common.csv_download(grid, "replay_sweep")
