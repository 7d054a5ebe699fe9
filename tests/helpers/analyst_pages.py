"""Analyst pages opened in an AppTest from a shared link, and one row of plain SQL to check
their figures against."""

from __future__ import annotations

from sqlalchemy import Engine, text
from streamlit.testing.v1 import AppTest

from tests.helpers.pages import run
from tests.helpers.servers import APP


def open_page(page: str, **query: str | list[str]) -> AppTest:
    """A page opened from a shared link: its filters in the URL."""
    at = run(AppTest.from_file(APP, default_timeout=60))
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(page)
    return run(at)


def sql(engine: Engine, query: str, **params: object) -> tuple:  # type: ignore[type-arg]
    with engine.connect() as connection:
        return tuple(connection.execute(text(query), params).one())
