"""Process-wide resources for the pages: the engine and the agent runtime (cached)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from agent.runtime import Runtime, build_runtime
from data.db import describe, make_engine
from data.metrics import start_exporter
from data.migrate import upgrade
from data.settings import get_settings


def ensure_routed() -> None:
    """Make sure app.py (the router) runs, even for a first visit to a page's own URL.

    Streamlit runs a fresh server in its legacy `pages/` folder mode until some session calls
    `st.navigation`; a first request for /cost would run pages/cost.py alone, without app.py's
    page config, settings check and sidebar. Leaving that mode and rerunning routes the same
    URL through app.py."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


RANGES = {
    "Last 24 hours": timedelta(hours=24),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "Last 90 days": timedelta(days=90),
}


@st.cache_resource(show_spinner="Opening the database…")
def engine() -> Engine:
    """The database engine, migrated to the newest schema; also starts /metrics once."""
    settings = get_settings()
    upgrade(settings.sqlalchemy_url)
    start_exporter(host=settings.metrics_host, port=settings.metrics_port)
    return make_engine(settings.sqlalchemy_url)


@st.cache_resource(show_spinner="Starting the chat model…")
def runtime() -> Runtime:
    """The agent and its chat service (starts the embedded model server when needed)."""
    return build_runtime(get_settings(), engine=engine())


def database_error(error: SQLAlchemyError) -> str:
    """One line naming the unreachable database (never its password) and the driver's reason."""
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    return f"The database {describe(get_settings().sqlalchemy_url)} is unavailable: {reason}"


def time_range(label: str) -> tuple[datetime, datetime]:
    """[start, end) for a preset label; `end` is the next whole minute so caching works."""
    end = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return end - RANGES[label], end
