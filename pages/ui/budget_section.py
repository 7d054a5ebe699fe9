"""The budgets section that the Cost page and the Budgets page both draw: each budget's spend
in its current period against its limit, the forecast to the period's end, and the users near
or over (presentation only; the figures come from data/workflows/budgets.py)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from sqlalchemy import Engine

from data.workflows import budget_report
from pages.ui import common

COLUMNS = {
    "budget_id": st.column_config.NumberColumn("Id", format="%d"),
    "scope": "Scope",
    "period": "Period",
    "period_start": st.column_config.DatetimeColumn("Period start (UTC)", format="YYYY-MM-DD"),
    "period_end": st.column_config.DatetimeColumn("Resets (UTC)", format="YYYY-MM-DD HH:mm"),
    "limit_usd": st.column_config.NumberColumn("Limit", format="$%.2f"),
    "warn_at_usd": st.column_config.NumberColumn("Warning at", format="$%.2f"),
    "spent_usd": st.column_config.NumberColumn("Spent", format="$%.4f"),
    "used_percent": st.column_config.ProgressColumn(
        "Used", format="%.0f%%", min_value=0, max_value=100
    ),
    "forecast_usd": st.column_config.NumberColumn(
        "Forecast at period end", format="$%.4f", help="Spend so far ÷ time elapsed × period"
    ),
    "forecast_percent": st.column_config.NumberColumn("Forecast (% of limit)", format="%.0f%%"),
    "status": "Status",
    "user_id": "User",
    "budget": "Budget",
}


def chart(report: pd.DataFrame) -> go.Figure:
    """Used and forecast share of each budget's limit, with the 100 % line."""
    fig = go.Figure()
    fig.add_bar(
        x=report["scope"] + " · " + report["period"],
        y=report["used_percent"],
        name="Spent so far",
        hovertemplate="%{x}<br>spent: %{y:.1f}% of the limit<extra></extra>",
    )
    fig.add_bar(
        x=report["scope"] + " · " + report["period"],
        y=report["forecast_percent"],
        name="Forecast at period end",
        hovertemplate="%{x}<br>forecast: %{y:.1f}% of the limit<extra></extra>",
    )
    fig.add_hline(y=100, line_dash="dash", annotation_text="limit")
    fig.update_layout(
        barmode="group",
        title="Budgets: spend and forecast, % of each limit",
        yaxis_title="% of the budget's limit",
        xaxis_title="Budget (scope · period)",
        margin={"t": 50, "b": 10},
    )
    return fig


def section(engine: Engine, title: str = "Budgets") -> None:
    """Draw the section (nothing but a hint when no budget exists)."""
    report = budget_report.budget_report(engine=engine)
    st.subheader(title)
    if report.empty:
        st.caption(
            "No budgets yet. An admin can add per-user, per-team or global spending limits "
            "on the Budgets page."
        )
        return
    over = int((report["status"] == "over").sum())
    warned = int((report["status"] == "warning").sum())
    st.caption(
        f"{len(report)} budgets in their current UTC period · {over} over · {warned} past their "
        "warning threshold. Spend counts every recorded call (chat, summarizer, embedder) and "
        "the calls in flight."
    )
    st.plotly_chart(chart(report), width="stretch")
    st.dataframe(report, hide_index=True, width="stretch", column_config=COLUMNS, key="budgets")
    common.csv_download(report, "budgets")
    near = budget_report.users_near_or_over(engine=engine)
    st.markdown("**Users near or over a budget**")
    if near.empty:
        st.caption("No user is past the warning threshold of a budget that covers them.")
    else:
        st.dataframe(
            near, hide_index=True, width="stretch", column_config=COLUMNS, key="budget_users"
        )
        common.csv_download(near, "budget_users")
