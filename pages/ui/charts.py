"""Plotly figures and table formats shared by the analyst pages (presentation only)."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from data.analytics.filters import Filters
from data.integrations.prices import chat_models

PRICEABLE_MODELS = list(chat_models("openai"))
_MS = {"hour": 3_600_000, "day": 86_400_000}
_TICKS = {"hour": "%b %d %H:%M", "day": "%b %d"}
_AXIS = {"hour": "Hour (UTC)", "day": "Day (UTC)"}


def time_axis(fig: go.Figure, filters: Filters) -> go.Figure:
    """The whole filtered range on the x axis, in the filters' buckets."""
    fig.update_xaxes(
        range=[filters.start, filters.end],
        tickformat=_TICKS[filters.unit],
        title_text=_AXIS[filters.unit],
    )
    fig.update_layout(margin={"t": 50, "b": 10}, hovermode="closest")
    return fig


def stacked_bars(
    frame: pd.DataFrame, filters: Filters, *, y: str, color: str, axis: str, title: str, value: str
) -> go.Figure:
    """Bars per time bucket stacked by `color`, with exact values on hover."""
    fig = px.bar(
        frame,
        x="bucket",
        y=y,
        color=color,
        title=title,
        labels={y: axis, color: color.capitalize()},
    )
    fig.update_traces(
        xperiod=_MS[filters.unit],
        xperiodalignment="middle",
        # A bar as wide as its bucket (less a gap): plotly sizes date bars by the gap between
        # them, so a single bucket (a one-day range) was drawn as a hairline.
        width=0.8 * _MS[filters.unit],
        hovertemplate=f"%{{x|{_TICKS[filters.unit]}}}<br>%{{fullData.name}}: {value}"
        "<extra></extra>",
    )
    return zero_floor(time_axis(fig, filters), frame, y)


def zero_floor(fig: go.Figure, frame: pd.DataFrame, y: str) -> go.Figure:
    """Amounts start at zero; when every one is zero (a free local model) the axis runs from
    0 to 1 with a note, instead of plotly's -1 to 1 around nothing."""
    values = pd.to_numeric(frame[y], errors="coerce") if y in frame else pd.Series(dtype=float)
    if values.fillna(0).eq(0).all():
        fig.update_yaxes(range=[0, 1])
        fig.add_annotation(
            text="Every value in this range is 0",
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
            showarrow=False,
            font={"color": "gray"},
        )
    else:
        fig.update_yaxes(rangemode="tozero")
    return fig


def count_axis(fig: go.Figure, counts: pd.Series) -> go.Figure:
    """A y axis of whole counts from zero: no 0.2 of a call when there are few."""
    top = int(pd.to_numeric(counts, errors="coerce").fillna(0).max()) if len(counts) else 0
    fig.update_yaxes(rangemode="tozero")
    if top <= 5:  # plotly's own ticks are round numbers above that
        fig.update_yaxes(tick0=0, dtick=1)
    return fig


def lines(
    frame: pd.DataFrame,
    filters: Filters,
    *,
    y: str,
    color: str,
    axis: str,
    title: str,
    value: str,
    dash: str | None = None,
) -> go.Figure:
    fig = px.line(
        frame,
        x="bucket",
        y=y,
        color=color,
        line_dash=dash,
        markers=True,
        title=title,
        labels={y: axis, color: color.capitalize()},
    )
    fig.update_traces(
        hovertemplate=f"%{{x|{_TICKS[filters.unit]}}}<br>%{{fullData.name}}: {value}<extra></extra>"
    )
    # Latencies, rates and percentages start at zero: a lone point drew an axis of 2,613.5 to
    # 2,615 ms, and an error rate of 0 % one of -1 to 1.
    return zero_floor(time_axis(fig, filters), frame, y)


COLUMNS = {
    "model": "Model",
    "provider": "Provider",
    "user": "User",
    "user_id": "User",
    "session": "Session",
    "session_id": "Session",
    "ts": st.column_config.DatetimeColumn("Time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    "first_call": st.column_config.DatetimeColumn("First call (UTC)", format="YYYY-MM-DD HH:mm"),
    "last_call": st.column_config.DatetimeColumn("Last call (UTC)", format="YYYY-MM-DD HH:mm"),
    "turn": st.column_config.NumberColumn("Turn"),
    "turns": st.column_config.NumberColumn("Turns"),
    "sessions": st.column_config.NumberColumn("Sessions", format="localized"),
    "calls": st.column_config.NumberColumn("Calls", format="localized"),
    "input_tokens": st.column_config.NumberColumn("Input tokens", format="localized"),
    "cached_input_tokens": st.column_config.NumberColumn("of which cached", format="localized"),
    "output_tokens": st.column_config.NumberColumn("Output tokens", format="localized"),
    "tokens": st.column_config.NumberColumn("Tokens", format="localized"),
    "cost_usd": st.column_config.NumberColumn("Cost (USD)", format="$%.6f"),
    "actual_cost_usd": st.column_config.NumberColumn("Actual cost (USD)", format="$%.4f"),
    "what_if_cost_usd": st.column_config.NumberColumn("What-if cost (USD)", format="$%.4f"),
    "difference_usd": st.column_config.NumberColumn("Difference (USD)", format="$%.4f"),
    "cost_per_1k_calls": st.column_config.NumberColumn("Cost / 1k calls", format="$%.4f"),
    "unpriced_calls": st.column_config.NumberColumn(
        "Unpriced calls", help="Calls whose cost is unknown; not counted in any cost"
    ),
    "errors": st.column_config.NumberColumn("Failed calls"),
    "latency_ms": st.column_config.NumberColumn("Latency (ms)", format="%.0f"),
    "ttft_ms": st.column_config.NumberColumn("TTFT (ms)", format="%.0f"),
    "context_percent": st.column_config.ProgressColumn(
        "Context %", format="%.1f%%", min_value=0, max_value=100
    ),
    "peak_context_percent": st.column_config.ProgressColumn(
        "Peak context %", format="%.1f%%", min_value=0, max_value=100
    ),
    "context_tokens": st.column_config.NumberColumn("Context tokens", format="localized"),
    "context_window": st.column_config.NumberColumn("Window", format="localized"),
    "summarizations": st.column_config.NumberColumn("Summarizations"),
    "status": "Status",
    "error": "Error",
    "purpose": "Purpose",
}
