"""Context-window use: how full each request was, which sessions came closest to the limit, and
what summarization did about it."""

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from data.analytics import context_usage, window_pressure
from data.analytics.filters import Filters
from data.config.settings import get_settings
from pages.ui import charts, common, filtering, signin, transcript

common.ensure_routed()
who = signin.require("context")
TTL = 60


@st.cache_data(ttl=TTL, max_entries=64, show_spinner=False)
def _frame(_engine: Engine, url: str, name: str, filters: Filters, **kwargs: float) -> pd.DataFrame:
    return getattr(context_usage, name)(engine=_engine, filters=filters, **kwargs)


st.title("Context window")
settings = get_settings()
trigger = 100 * settings.summary_trigger_fraction
engine, filters = common.analyst_page()
url = common.read_key()
st.caption(filtering.describe_filters(filters) + f" · summarization trigger {trigger:.0f}%")

above, total = context_usage.share_above(engine=engine, filters=filters, trigger_percent=trigger)
if total == 0:
    st.info(
        "No successful chat calls match these filters. Widen the date range or clear the "
        "model, user or session filter.",
        icon=":material/info:",
    )
    st.stop()
summaries = _frame(engine, url, "summarization_over_time", filters)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Chat calls", f"{total:,}", border=True)
c2.metric(
    f"At or above {trigger:.0f}%",
    f"{100 * above / total:.2f}%",
    border=True,
    help=f"{above:,} calls reached the summarization trigger",
)
c3.metric(
    "Summarizations",
    f"{int(summaries['events'].sum()):,}",
    border=True,
    help=f"{int(summaries['tokens_saved'].sum()):,} tokens saved in total",
)
c4.metric(
    "Summarizer cost",
    f"${summaries['cost_usd'].sum():,.4f}",
    border=True,
    help="Cost of the summarization calls themselves (purpose = summarize)",
)

left, right = st.columns(2)
with left:
    hist = _frame(engine, url, "context_histogram", filters)
    fig = px.bar(
        hist,
        x="bin",
        y="calls",
        title="Context % per chat call",
        labels={"bin": "Context window used (%)", "calls": "Chat calls"},
    )
    fig.update_traces(
        xperiod=None,
        offset=0,
        width=context_usage.BIN_WIDTH,
        hovertemplate="%{x}–%{customdata}%: %{y:,} calls<extra></extra>",
        customdata=hist["bin"] + context_usage.BIN_WIDTH,
    )
    fig.add_vline(
        x=trigger,
        line_dash="dash",
        line_color="firebrick",
        annotation_text=f"trigger {trigger:.0f}%",
    )
    fig.update_xaxes(range=[0, 105])
    charts.count_axis(fig, hist["calls"])
    st.plotly_chart(fig, width="stretch")
with right:
    over = _frame(engine, url, "context_over_time", filters, trigger_percent=trigger)
    long = over.melt(
        id_vars="bucket", value_vars=["p50", "p95"], var_name="percentile", value_name="percent"
    )
    fig = charts.lines(
        long,
        filters,
        y="percent",
        color="percentile",
        axis="Context window used (%)",
        title="Context % over time",
        value="%{y:.1f}%",
    )
    fig.add_hline(y=trigger, line_dash="dash", line_color="firebrick")
    fig.update_yaxes(range=[0, 105])  # the whole window, so the trigger line is in view
    st.plotly_chart(fig, width="stretch")
common.csv_download(over, "context_over_time")

st.subheader("Sessions by peak context")
ranked = _frame(engine, url, "sessions_by_peak_context", filters)
st.caption("Click a session to see how its context grew, turn by turn.")
rows = common.picked_rows(
    ranked, key="peak_table", export="sessions_by_peak_context", column_config=charts.COLUMNS
)
chosen = (
    ranked.iloc[rows[0]]["session"]
    if rows
    else (ranked.iloc[0]["session"] if len(ranked) else None)
)
if chosen is not None:
    growth = context_usage.session_growth(engine=engine, session_id=chosen)
    chat = growth[growth["purpose"] == "chat"]
    folds = growth[growth["purpose"] == "summarize"]
    fig = go.Figure(
        go.Scatter(
            x=chat["turn"],
            y=chat["context_tokens"],
            mode="lines+markers",
            name="request context",
            hovertemplate="turn %{x}: %{y:,} tokens<extra></extra>",
        )
    )
    for row in folds.itertuples():
        fig.add_vline(x=row.turn - 0.5, line_dash="dot", line_color="darkorange")
    if len(folds):
        fig.add_trace(
            go.Scatter(
                x=folds["turn"] - 0.5,
                y=folds["input_tokens"],
                mode="markers",
                marker={"symbol": "x", "size": 11, "color": "darkorange"},
                name="summarized",
                hovertemplate="before turn %{customdata}: folded %{y:,} tokens<extra></extra>",
                customdata=folds["turn"],
            )
        )
    if len(chat):
        fig.add_hline(
            y=trigger / 100 * chat["context_window"].iloc[0],
            line_dash="dash",
            line_color="firebrick",
            annotation_text="trigger",
        )
    fig.update_layout(
        title=f"Context growth of session {chosen}",
        xaxis_title="Turn",
        yaxis_title="Context (tokens)",
        hovermode="closest",
    )
    fig.update_xaxes(tick0=1, dtick=max(1, round(len(chat) / 10)))  # whole turns
    fig.update_yaxes(rangemode="tozero")
    st.plotly_chart(fig, width="stretch")
    if st.button("Open this conversation", icon=":material/forum:"):
        transcript.open_conversation(chosen)

st.subheader("Summarization")
if summaries.empty:
    st.caption("No summarization happened in this range.")
else:
    left, right = st.columns(2)
    with left:
        st.plotly_chart(
            charts.stacked_bars(
                summaries.assign(series="tokens saved"),
                filters,
                y="tokens_saved",
                color="series",
                axis="Tokens saved",
                title="Tokens saved by summarization",
                value="%{y:,} tokens",
            ),
            width="stretch",
        )
    with right:
        long = summaries.rename(columns={"latency_p50_ms": "p50", "latency_p95_ms": "p95"}).melt(
            id_vars="bucket", value_vars=["p50", "p95"], var_name="percentile", value_name="ms"
        )
        st.plotly_chart(
            charts.lines(
                long,
                filters,
                y="ms",
                color="percentile",
                axis="Summarizer latency (ms)",
                title="Summarization latency",
                value="%{y:,.0f} ms",
            ),
            width="stretch",
        )
    st.dataframe(summaries, hide_index=True, width="stretch", column_config=charts.COLUMNS)
    common.csv_download(summaries, "summarization_over_time")

st.subheader("Where the window pushed back")
incidents = window_pressure.window_incidents(engine=engine, filters=filters)
counts = window_pressure.window_counts(incidents)
w1, w2, w3 = st.columns(3)
for column, kind in zip((w1, w2, w3), window_pressure.KINDS, strict=True):
    column.metric(window_pressure.KINDS[kind], f"{counts[kind]:,}", border=True)
if incidents.empty:
    st.caption(
        "No request was cut short by the window, no message was refused for its length and "
        "every summarization kept the configured messages in this range."
    )
else:
    per_bucket = (
        incidents.assign(kind=incidents["kind"].map(window_pressure.KINDS))
        .groupby(["bucket", "kind"], as_index=False)
        .size()
        .rename(columns={"size": "incidents"})
    )
    st.plotly_chart(
        charts.stacked_bars(
            per_bucket,
            filters,
            y="incidents",
            color="kind",
            axis="Incidents",
            title="Window incidents",
            value="%{y:,}",
        ),
        width="stretch",
    )
    st.caption(
        "Refused messages and folds are not tied to a model, so the model filter does not "
        "narrow them."
    )
    st.dataframe(incidents, hide_index=True, width="stretch", column_config=charts.COLUMNS)
    common.csv_download(incidents, "window_incidents")
