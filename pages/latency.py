"""Latency: p50/p95/p99 over time by model, error rate, and the slowest calls."""

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from data.analytics import latency
from data.analytics.filters import Filters
from data.config.settings import get_settings
from data.config.urls import redact_url
from data.integrations import prometheus
from pages.ui import charts, common, filtering, signin, transcript

common.ensure_routed()
who = signin.require("latency")
TTL = 60


@st.cache_data(ttl=TTL, max_entries=64, show_spinner=False)
def _db(_engine: Engine, url: str, name: str, filters: Filters, **kwargs: str) -> pd.DataFrame:
    return getattr(latency, name)(engine=_engine, filters=filters, **kwargs)


@st.cache_data(ttl=TTL, max_entries=64, show_spinner=False)
def _prom(prom_url: str, filters: Filters, metric: str) -> pd.DataFrame:
    return prometheus.latency_over_time(url=prom_url, filters=filters, metric=metric)


st.title("Latency")
settings = get_settings()
engine, filters = common.analyst_page()
url = common.read_key()

metric = (
    st.segmented_control(
        "Measure",
        list(latency.METRICS),
        default="model",
        format_func=latency.METRICS.__getitem__,
        key="latency_metric",
    )
    or "model"
)
prom_url = str(settings.prometheus_url).rstrip("/") if settings.prometheus_url else None
series = None
events = metric in latency.EVENT_KINDS
grouped_by = {"memory": "Store", "tool": "Tool"}.get(metric, "Model")
# Memory recall and tool calls are always read from agent_events in the database.
if prom_url and not events and (filters.user or filters.session):
    st.caption(
        "Prometheus keeps no per-user or per-session series, so with a user or session "
        "filter the percentiles are computed in the database."
    )
elif prom_url and not events:
    try:
        series = _prom(prom_url, filters, metric)
        st.badge(
            f"Source: Prometheus ({redact_url(prom_url)})",
            icon=":material/monitoring:",
            color="green",
        )
        if metric == "model":
            st.caption("model_latency_seconds covers every model call (chat and summarization).")
    except prometheus.PrometheusUnavailable as error:
        st.warning(
            f"Prometheus at {redact_url(prom_url)} "
            f"{'answered with an error' if error.answered else 'is unreachable'} "
            f"({error}); showing percentiles "
            "computed in the database instead.",
            icon=":material/cloud_off:",
        )
if series is None:
    series = _db(engine, url, "latency_over_time", filters, metric=metric)
    st.badge("Source: database", icon=":material/database:", color="blue")
st.caption(filtering.describe_filters(filters))

if series.empty:
    hint = (
        " The agent records one for each long-term memory search and each tool call it makes."
        if events
        else ""
    )
    st.info(
        f"No {latency.METRICS[metric].lower()} measurements match these filters.{hint}",
        icon=":material/info:",
    )
else:
    long = series.melt(
        id_vars=["bucket", "model"],
        value_vars=[c for c in ("p50", "p95", "p99") if c in series],
        var_name="percentile",
        value_name="ms",
    )
    long = long.rename(columns={"model": grouped_by.lower()})
    st.plotly_chart(
        charts.lines(
            long,
            filters,
            y="ms",
            color=grouped_by.lower(),
            dash="percentile",
            axis=f"{latency.METRICS[metric]} (ms)",
            title=f"{latency.METRICS[metric]}: p50 / p95 / p99 by {grouped_by.lower()}",
            value="%{y:,.0f} ms",
        ),
        width="stretch",
    )
    summary = _db(engine, url, "latency_summary", filters, metric=metric)
    if summary is None:
        st.caption(
            "Percentiles over the whole range are shown for ranges up to 3 days; the "
            "chart's per-bucket percentiles above are exact for any range."
        )
    else:
        st.dataframe(
            summary,
            hide_index=True,
            width="stretch",
            column_config={
                **charts.COLUMNS,
                **{
                    p: st.column_config.NumberColumn(f"{p} (ms)", format="%.0f")
                    for p in ("p50", "p95", "p99")
                },
            },
        )
    common.csv_download(series, f"latency_{metric}")
errors = _db(engine, url, "error_rate_over_time", filters)
st.plotly_chart(
    charts.lines(
        errors,
        filters,
        y="error_rate",
        color="model",
        axis="Failed calls (%)",
        title="Error rate",
        value="%{y:.2f}%",
    ),
    width="stretch",
)

st.subheader("Slowest calls")
slow = _db(engine, url, "slowest_calls", filters)
st.caption("Click a call to open its conversation.")
rows = common.picked_rows(
    slow, key="slow_table", export="slowest_calls", column_config=charts.COLUMNS
)
if rows:
    transcript.open_conversation(slow.iloc[rows[0]]["session_id"])
