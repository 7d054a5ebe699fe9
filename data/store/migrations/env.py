"""Alembic environment: the URL comes from the caller (data.store.migrate), never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from data.store import orm_outcomes, orm_rollups, orm_support, orm_team  # noqa: F401 (every table in the metadata)
from data.store.orm import Base

target_metadata = Base.metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `python -m data.store.migrate`")
run(connection)
