"""The test databases: a fresh Postgres database of a test's own, and every table a test
writes emptied between tests, children first."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy import Engine, text

from data.store.migrate import upgrade
from tests.helpers.servers import PG_ADMIN_URL


def truncate_all(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in (
            "conversation_outcomes",
            "outcome_jobs",
            "ticket_history",
            "support_tickets",
            "maintenance_runs",
            "auth_failures",
            "users",
            "budget_alerts",
            "budget_reservations",
            "budget_changes",
            "budgets",
            "review_scores",
            "review_claims",
            "review_items",
            "feedback_thumbs",
            "agent_events",
            "model_calls",
            "messages",
            "chat_sessions",
            # After conversation_outcomes: its triggers queue the days it deleted.
            "rollup_outcome_dirty",
            "rollup_outcomes",
        ):
            connection.execute(text(f"DELETE FROM {table}"))


@contextmanager
def fresh_postgres(prefix: str, *, migrate: bool = True) -> Iterator[str]:
    """A database of its own on the machine's Postgres (`{prefix}_{random}`), migrated unless
    told otherwise, dropped at the end; its postgresql:// URL. Postgres runs on every machine
    of this project's kind, so an unreachable server fails the test, never skips it."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        pytest.fail(f"Postgres is unreachable at {PG_ADMIN_URL}: {error}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
