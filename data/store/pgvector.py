"""The `vector` extension for long-term memory on Postgres (MEMORY_BACKEND=pgvector): created by
the migrate step when that backend is chosen, checked by /ready and the Status page. Its table
is made by the store itself (agent/memory_pgvector.py), since its vector size is the embedding
model's."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from data.store.db import describe, failure_reason

MISSING = (
    "the pgvector extension is not installed in {where} (MEMORY_BACKEND=pgvector): "
    "install it on the server (Debian: postgresql-15-pgvector, or `make pgvector` here), or "
    "set MEMORY_BACKEND=qdrant"
)


class VectorExtensionError(RuntimeError):
    """pgvector cannot be used: one line naming the database (never its password)."""


def version(connection: Connection) -> str | None:
    """The installed extension's version, or None."""
    found = connection.execute(
        text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    ).scalar()
    return None if found is None else str(found)


def available(connection: Connection) -> bool:
    """Whether the server has pgvector's files (so CREATE EXTENSION can work)."""
    return bool(
        connection.execute(
            text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
        ).scalar()
    )


def ensure_in(connection: Connection) -> str:
    """`CREATE EXTENSION IF NOT EXISTS vector` in the caller's transaction; its version.
    Raises VectorExtensionError in one line when the server has no pgvector or the role may
    not create it."""
    where = describe(connection.engine.url.render_as_string(hide_password=True))
    found = version(connection)
    if found is not None:
        return found
    if not available(connection):
        raise VectorExtensionError(MISSING.format(where=where))
    try:
        with connection.begin_nested():
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    except SQLAlchemyError as error:
        raise VectorExtensionError(
            f"cannot create the pgvector extension in {where}: "
            f"{failure_reason(error)} (a superuser can run CREATE EXTENSION vector once)"
        ) from None
    return version(connection) or "?"


def ensure(engine: Engine) -> str:
    """ensure_in, in a transaction of its own."""
    with engine.begin() as connection:
        return ensure_in(connection)
