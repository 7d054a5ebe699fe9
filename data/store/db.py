"""Engines and sessions for SQLite (embedded default) and Postgres (`DATABASE_URL`)."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def make_engine(url: str) -> Engine:
    """An engine for `url` (SQLAlchemy form). SQLite gets WAL and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 15, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            # WAL lets the pages read while the chat page writes.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(
        url,
        # A pooled connection is pinged as it is handed out: after a database restart every
        # pooled connection is dead, and without the ping the first request to take one fails
        # (SQLAlchemy only invalidates the pool once a statement has hit the dead socket). On
        # this machine the ping costs 0.05 ms a checkout at the median (0.23-0.35 ms p95 at a
        # load of 17 on 2 cores), a few checkouts a turn; measured by timing 2,000 checkouts.
        pool_pre_ping=True,
        pool_recycle=1800,
        pool_size=5,
        max_overflow=5,
        # Analyst queries sort tens of thousands of session rows: keep that off the disk. No
        # JIT: the planner's cost estimates for the rollup unions pass its threshold, and
        # compiling took 20-40 ms a query (EXPLAIN ANALYZE at 10M calls) for queries that run
        # in 5-50 ms, as they read rollups and index ranges rather than millions of rows.
        connect_args={"connect_timeout": 5, "options": "-c work_mem=32MB -c jit=off"},
    )


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def shared_engine(url: str) -> Engine:
    """The process's one engine (and connection pool) for `url`."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def dispose_shared() -> None:
    """Dispose of every shared engine and forget them (for a process that changes databases,
    such as the test suite)."""
    with _engines_lock:
        found = list(_engines.values())
        _engines.clear()
    for engine in found:
        engine.dispose()


def describe(url: str) -> str:
    """A password-free description of a database URL, safe for pages and logs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite ({parsed.database})"
    return f"Postgres ({parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database})"


def failure_reason(error: BaseException) -> str:
    """The first line of what the database said about a failed statement or connection (the
    driver's message behind SQLAlchemy's wrapper), for a one-line error."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# A read replica's engine knows its primary: a view that reads from the replica still writes
# (the rollup refresh, the queued days) on the primary. Kept by id with both engines, which
# live for the process (shared_engine, the pages' cached resources).
_primaries: dict[int, tuple[Engine, Engine]] = {}


def register_replica(replica: Engine, primary: Engine) -> None:
    """Make `primary` the engine that writes for reads on `replica`."""
    with _engines_lock:
        _primaries[id(replica)] = (replica, primary)


def writer(engine: Engine) -> Engine:
    """The engine that writes for `engine`: its primary when it is a registered read replica,
    otherwise itself."""
    found = _primaries.get(id(engine))
    return found[1] if found is not None and found[0] is engine else engine
