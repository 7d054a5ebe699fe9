"""Token cost: totals, cost and tokens per day per model, and a table per model."""

from datetime import datetime, timedelta

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from data.cost import CostTotals, cost_by_model, cost_over_time, cost_totals, has_calls
from data.settings import get_settings
from pages import common

common.ensure_routed()


@st.cache_data(ttl=30, max_entries=64, show_spinner=False)
def _totals(_engine: Engine, url: str, start: datetime, end: datetime) -> CostTotals:
    return cost_totals(engine=_engine, start=start, end=end)


@st.cache_data(ttl=30, max_entries=64, show_spinner=False)
def _over_time(_engine: Engine, url: str, start: datetime, end: datetime) -> pd.DataFrame:
    return cost_over_time(engine=_engine, start=start, end=end, unit="day")


@st.cache_data(ttl=30, max_entries=64, show_spinner=False)
def _by_model(_engine: Engine, url: str, start: datetime, end: datetime) -> pd.DataFrame:
    return cost_by_model(engine=_engine, start=start, end=end)


def compact(n: int) -> str:
    """12,345 / 1.23M / 4.56B: a metric card that fits its column."""
    for size, suffix in ((1e9, "B"), (1e6, "M")):
        if n >= size:
            return f"{n / size:,.2f}{suffix}"
    return f"{n:,}"


def daily_bars(
    daily: pd.DataFrame,
    start: datetime,
    end: datetime,
    *,
    y: str,
    axis: str,
    title: str,
    value: str,
) -> go.Figure:
    """Bars per UTC day stacked by model, over the whole selected range, exact values on hover."""
    fig = px.bar(
        daily,
        x="bucket",
        y=y,
        color="model",
        title=title,
        labels={"bucket": "Day (UTC)", y: axis, "model": "Model"},
    )
    fig.update_traces(
        xperiod=86_400_000,
        xperiodalignment="middle",
        hovertemplate=f"%{{x|%Y-%m-%d}}<br>%{{fullData.name}}: {value}<extra></extra>",
    )
    fig.update_xaxes(range=[start.date(), end.date() + timedelta(days=1)], tickformat="%b %d")
    fig.update_layout(margin={"t": 50, "b": 10}, hovermode="closest")
    return fig


st.title("Token cost")
url = get_settings().sqlalchemy_url
try:
    engine = common.engine()
    any_calls = has_calls(engine=engine)
except SQLAlchemyError as error:
    st.error(common.database_error(error))
    st.stop()

label = st.sidebar.selectbox("Date range", list(common.RANGES), index=2, key="cost_range")
start, end = common.time_range(label)

if not any_calls:
    st.info(
        "No model calls are recorded yet. Chat with the agent on the **Chat** page, or load "
        "30 days of demo history with `make demo` (see the README).",
        icon=":material/info:",
    )
    st.page_link("pages/chat.py", label="Open the chat", icon=":material/chat:")
    st.stop()

totals = _totals(engine, url, start, end)
if totals.calls == 0:
    st.info(
        f"No model calls between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M} UTC. "
        "Pick a longer date range in the sidebar.",
        icon=":material/info:",
    )
    st.stop()

c1, c2, c3, c4 = st.columns(4)
c1.metric("Cost (USD)", f"${totals.cost_usd:,.4f}", border=True)
c2.metric(
    "Tokens",
    compact(totals.tokens),
    border=True,
    help=f"{totals.tokens:,} tokens: {totals.input_tokens:,} input (of which "
    f"{totals.cached_input_tokens:,} cached) and {totals.output_tokens:,} output",
)
c3.metric("Model calls", f"{totals.calls:,}", border=True, help=f"{totals.errors:,} of them failed")
c4.metric(
    "Unpriced calls",
    f"{totals.unpriced_calls:,}",
    border=True,
    help="Calls of models with no known price. Their cost is not in the total; add the "
    "model to PRICE_OVERRIDES_FILE to price them.",
)

daily = _over_time(engine, url, start, end)
left, right = st.columns(2)
with left:
    st.plotly_chart(
        daily_bars(
            daily,
            start,
            end,
            y="cost_usd",
            axis="Cost (USD)",
            title="Cost per day",
            value="$%{y:.6f}",
        ),
        width="stretch",
    )
with right:
    st.plotly_chart(
        daily_bars(
            daily,
            start,
            end,
            y="tokens",
            axis="Tokens",
            title="Tokens per day",
            value="%{y:,} tokens",
        ),
        width="stretch",
    )

st.download_button(
    "Download daily CSV",
    daily.to_csv(index=False).encode(),
    "cost_per_day.csv",
    "text/csv",
    icon=":material/download:",
)

st.subheader("Per model")
table = _by_model(engine, url, start, end)
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        "model": "Model",
        "provider": "Provider",
        "calls": st.column_config.NumberColumn("Calls", format="localized"),
        "input_tokens": st.column_config.NumberColumn("Input tokens", format="localized"),
        "cached_input_tokens": st.column_config.NumberColumn("of which cached", format="localized"),
        "output_tokens": st.column_config.NumberColumn("Output tokens", format="localized"),
        "tokens": st.column_config.NumberColumn("Tokens", format="localized"),
        "cost_usd": st.column_config.NumberColumn("Cost (USD)", format="$%.6f"),
        "cost_per_1k_calls": st.column_config.NumberColumn("Cost / 1k calls", format="$%.4f"),
        "unpriced_calls": st.column_config.NumberColumn(
            "Unpriced calls", help="Calls whose cost is unknown; not counted in Cost"
        ),
        "errors": st.column_config.NumberColumn("Failed calls"),
    },
)
st.download_button(
    "Download CSV",
    table.to_csv(index=False).encode(),
    "cost_by_model.csv",
    "text/csv",
    icon=":material/download:",
)
