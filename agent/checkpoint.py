"""LangGraph checkpointer matching the database: SQLite file or Postgres."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from data.config.settings import Settings
from data.config.urls import to_libpq_url


def make_checkpointer(settings: Settings) -> BaseCheckpointSaver[str]:
    """A saver that survives app restarts, so a chat session can be resumed."""
    if settings.is_postgres:
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        pool = ConnectionPool(
            to_libpq_url(settings.sqlalchemy_url),
            min_size=1,
            max_size=10,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            # A connection is checked as it is handed out, so after a database restart the
            # next turn gets a fresh one instead of failing on a dead one.
            check=ConnectionPool.check_connection,
            timeout=10,
            open=True,
        )
        saver = PostgresSaver(pool)  # type: ignore[arg-type]
        saver.setup()
        return saver
    path = Path(settings.data_dir) / "checkpoints.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, check_same_thread=False)
    # WAL with synchronous=NORMAL, like the app database (data/store/db.py): a commit is durable
    # against an application crash and costs no fsync, instead of two in rollback-journal mode.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    saver_sqlite = SqliteSaver(connection)
    saver_sqlite.setup()
    return saver_sqlite
