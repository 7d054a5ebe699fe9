"""The analyst pages' sidebar filters: range, models, user and session, read from and written
back to the URL, with a notice for every value that had to be corrected."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import streamlit as st
from sqlalchemy import Engine

from data.access.sanitize import md
from data.analytics.cost import known_models
from data.analytics.filters import MIN_DAY, PRESET_LABELS, Filters, parse_filters
from data.config.settings import get_settings


@st.cache_data(ttl=60, max_entries=8, show_spinner=False)
def _models(_engine: Engine, url: str) -> list[str]:
    return known_models(engine=_engine)


def _query_params() -> dict[str, str | list[str]]:
    params: dict[str, str | list[str]] = {}
    for key in st.query_params:
        values = st.query_params.get_all(key)
        params[key] = values if key == "model" else (values[-1] if values else "")
    return params


def _widget_params() -> dict[str, str | list[str]]:
    state = st.session_state
    params: dict[str, str | list[str]] = {"range": state["f_range"]}
    if state["f_range"] == "custom":
        dates = state.get("f_dates") or ()
        if len(dates) == 2:
            params["from"], params["to"] = dates[0].isoformat(), dates[1].isoformat()
        elif len(dates) == 1:  # the second click of a range pick has not happened yet
            params["from"] = params["to"] = dates[0].isoformat()
    if state["f_models"]:
        params["model"] = list(state["f_models"])
    for key, name in (("f_user", "user"), ("f_session", "session")):
        if state[key].strip():
            params[name] = state[key].strip()
    if state["f_grain"] != "auto":
        params["grain"] = state["f_grain"]
    return params


def sidebar_filters(engine: Engine, keep: Sequence[str] = ()) -> Filters:
    """The analyst pages' shared filters: read from the URL, shown in the sidebar, written back
    to the URL, so a link reproduces the view. Corrections are shown as notices. The URL
    parameters named in `keep` are the page's own (checked by the page) and stay in the URL."""
    models = _models(engine, get_settings().sqlalchemy_url)
    now = datetime.now(UTC)
    url_params = _query_params()
    from_url, notices = parse_filters(url_params, known_models=models, now=now)
    if st.session_state.get("_filters_query") != url_params:
        # The URL changed from outside (first visit, a shared link): it wins over the widgets.
        st.session_state["f_range"] = from_url.preset
        st.session_state["f_dates"] = (
            from_url.start.date(),
            (from_url.end - timedelta(days=1)).date(),
        )
        st.session_state["f_models"] = list(from_url.models)
        st.session_state["f_user"] = from_url.user or ""
        st.session_state["f_session"] = from_url.session or ""
        st.session_state["f_grain"] = "auto" if from_url.unit_auto else from_url.unit
    with st.sidebar:
        st.subheader("Filters")
        st.selectbox(
            "Date range", list(PRESET_LABELS), format_func=PRESET_LABELS.__getitem__, key="f_range"
        )
        if st.session_state["f_range"] == "custom":
            st.date_input(
                "From – to (UTC days)", key="f_dates", min_value=MIN_DAY, max_value=now.date()
            )
        st.multiselect("Models", models, key="f_models", placeholder="All models")
        st.text_input("User", key="f_user", placeholder="All users", max_chars=128)
        st.text_input("Session", key="f_session", placeholder="All sessions", max_chars=128)
        st.segmented_control(
            "Granularity",
            ["auto", "hour", "day"],
            key="f_grain",
            format_func=lambda g: g.capitalize(),
            help="Auto: hourly up to 3 days, daily beyond",
        )
    filters, more = parse_filters(_widget_params(), known_models=models, now=now)
    query = filters.to_query() | {k: url_params[k] for k in keep if k in url_params}
    if query != url_params:
        st.query_params.from_dict(query)
    st.session_state["_filters_query"] = query
    for notice in dict.fromkeys(notices + more):
        st.warning(md(notice), icon=":material/tune:")
    return filters


def describe_filters(filters: Filters) -> str:
    """One line that says what the figures below are computed over."""
    parts = [f"{filters.start:%Y-%m-%d %H:%M} – {filters.end:%Y-%m-%d %H:%M} UTC"]
    parts.append(md(", ".join(filters.models)) if filters.models else "all models")
    if filters.user:
        parts.append(f"user {md(filters.user)}")
    if filters.session:
        parts.append(f"session {md(filters.session)}")
    parts.append(f"by {filters.unit}")
    return " · ".join(parts)
