"""Apply alembic migrations: `python -m data.store.migrate [--db URL]` (the run command does
this)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import OperationalError

from data.config.settings import SettingsError, get_settings
from data.config.urls import to_sqlalchemy_url
from data.store import partitions, pgvector
from data.store.db import describe, make_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _run(url: str, step: Callable[[Config], None]) -> None:
    engine = make_engine(to_sqlalchemy_url(url))
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            step(config)
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head", *, vector_memory: bool = False) -> None:
    """Bring the database at `url` (any accepted form) to `revision` (the newest by default);
    on Postgres, then make model_calls' monthly partitions ahead (this runs at every start),
    and with `vector_memory` (MEMORY_BACKEND=pgvector) create the vector extension, or raise
    pgvector.VectorExtensionError in one line."""

    def step(config: Config) -> None:
        command.upgrade(config, revision)
        partitions.ensure_in(config.attributes["connection"])
        if vector_memory:
            pgvector.ensure_in(config.attributes["connection"])

    _run(url, step)


def downgrade(url: str, revision: str) -> None:
    """Take the database at `url` back to `revision` (tests and benchmarks that compare)."""
    _run(url, lambda config: command.downgrade(config, revision))


def upgrade_for_command(db: str | None) -> str | None:
    """For a command line tool: migrate `db` (default: the configured database) and return its
    URL, or print one error line (a bad setting, an unreachable database) and return None."""
    url = db
    try:
        settings = get_settings()
        url = db or settings.sqlalchemy_url
        upgrade(url, vector_memory=settings.memory_backend == "pgvector")
    except (SettingsError, pgvector.VectorExtensionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else "unreachable"
        print(f"error: cannot reach the database {describe(str(url))}: {reason}", file=sys.stderr)
        return None
    return url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", help="database URL (default: the configured one)")
    args = parser.parse_args(argv)
    url = upgrade_for_command(args.db)
    if url is None:
        return 2
    print(f"migrations applied: {describe(url)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
