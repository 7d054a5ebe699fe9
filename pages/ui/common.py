"""Process-wide resources for the pages (the engine, the agent runtime, the feedback sync) and
the pieces several pages draw: filters, captions, transcripts, the reviewer's name."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from data.access import audit
from data.access.sanitize import csv_bytes
from data.analytics.filters import Filters
from data.config.settings import get_settings
from pages.ui.filtering import sidebar_filters
from pages.ui.resources import database_error, engine, read_engine
from pages.ui.signin import actor, page_link
from pages.ui.transcript import masking

log = logging.getLogger(__name__)


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


# Sign-in and roles --------------------------------------------------------------------------


def _audit_export(name: str, rows: int) -> None:
    audit.try_record(
        engine=engine(), actor=actor(), action="export", target=name, detail={"rows": rows}
    )


def csv_download(frame: Any, name: str, label: str = "Download CSV") -> None:
    """Every table's CSV download: cells that a spreadsheet would run as formulas are
    escaped, PII is masked with PII_MASKING, and the download is audited."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:100]
    st.download_button(
        label,
        csv_bytes(frame, mask=masking()),
        f"{name}.csv",
        "text/csv",
        icon=":material/download:",
        key=f"csv_{name}",
        on_click=_audit_export,
        args=(name, len(frame)),
    )


def picked_rows(
    frame: Any, *, key: str, export: str, multi: bool = False, **options: Any
) -> list[int]:
    """A table whose rows can be clicked (one, or several with `multi`), with its CSV download
    under it: the positions of the rows picked."""
    picked = st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        key=key,
        on_select="rerun",
        selection_mode="multi-row" if multi else "single-row",
        **options,
    )
    csv_download(frame, export)
    return list(picked.selection.rows)


def compact(n: int) -> str:
    """12,345 / 1.23M / 4.56B: a metric card that fits its column."""
    for size, suffix in ((1e9, "B"), (1e6, "M")):
        if n >= size:
            return f"{n / size:,.2f}{suffix}"
    return f"{n:,}"


_reading = threading.local()


def analyst_page(keep: Sequence[str] = ()) -> tuple[Engine, Filters]:
    """The start of every analyst page: the database to read (the primary, or the read replica
    when it holds exact figures; or a clear error), the shared filters (with the page's own URL
    parameters `keep`), and, for an empty database, what to do instead of empty charts."""
    from data.analytics.cost import has_calls

    try:
        db = engine()
        any_calls = has_calls(engine=db)
        reading = _where_to_read(db)
    except SQLAlchemyError as error:
        st.error(database_error(error))
        st.stop()
    filters = sidebar_filters(db, keep)
    if not any_calls:
        st.info(
            "No model calls are recorded yet. Chat with the agent on the **Chat** page, or load "
            "30 days of demo history with `make demo` (see Getting started in the docs).",
            icon=":material/info:",
        )
        page_link("chat", "pages/chat.py", label="Open the chat", icon=":material/chat:")
        st.stop()
    demo_notice(db, filters)
    return reading.engine, filters


def _where_to_read(primary: Engine) -> Any:
    """The view's Reading (data.analytics.replica), said on the page when it is not plain."""
    from data.analytics.replica import Reading, choose, lag_text

    replica = read_engine()
    if replica is None:
        reading = Reading(primary, False)
    else:
        wait_s = get_settings().database_read_max_wait_ms / 1000
        reading = choose(primary, replica, max_wait_s=wait_s)
        if reading.problem is not None:
            st.warning(reading.problem, icon=":material/database:")
        elif reading.as_of is not None:
            st.info(
                f"Data as of {reading.as_of.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: the read "
                f"replica is {lag_text(reading.lag_s)} behind the primary, and its figures are "
                "exact for that moment.",
                icon=":material/schedule:",
            )
    _reading.key = reading.key
    return reading


def read_key() -> str:
    """The database URL and where this view reads (primary, replica, replica as of a time), for
    the pages' cached reads: results read at different points in time never mix."""
    return f"{get_settings().sqlalchemy_url}|{getattr(_reading, 'key', 'primary')}"


def demo_notice(db: Engine, filters: Filters) -> None:
    """Say so when the range holds generated demo rows (`make demo`), on every analyst page."""
    from data.analytics.compare import has_demo_rows

    if has_demo_rows(engine=db, filters=filters):
        st.warning(
            "This range holds **demo rows** generated by `make demo`, not real traffic. "
            "Remove them with `python -m data.store.demo --remove`.",
            icon=":material/science:",
        )
