"""Backups (seed 8, monthly): `python -m data.store.backup create FILE` and `check FILE`.

- Postgres: `pg_dump --format=custom` (a consistent snapshot while the app runs); restore with
  `pg_restore --no-owner --dbname=URL FILE` into an empty database (docs/operations.md: Backup and
  restore).
- SQLite: the online backup API (sqlite3.Connection.backup), safe while the app writes; the
  copy is a plain SQLite file, restored by copying it into DATA_DIR while the app is stopped.

`check` restores a backup into a scratch database and counts every table's rows: the monthly
"full backup check". Both record a run in maintenance_runs, shown on the status page."""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy import Engine, func, inspect, select, table
from sqlalchemy.engine import make_url

from data.config.settings import SettingsError, get_settings
from data.config.urls import to_libpq_url, to_sqlalchemy_url
from data.store.db import describe, make_engine
from data.store.maintain import finish_run, start_run


class BackupError(RuntimeError):
    """A backup or restore step failed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    bytes: int
    counts: dict[str, int]

    @property
    def rows(self) -> int:
        return sum(self.counts.values())


def table_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table of the database (ours, alembic's and LangGraph's, if present)."""
    names = sorted(inspect(engine).get_table_names())
    with engine.connect() as connection:
        return {
            name: int(
                connection.execute(select(func.count()).select_from(table(name))).scalar_one()
            )
            for name in names
        }


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed (Debian: postgresql-client)")
    return path


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed: {result.stderr.strip()[:500]}")


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def backup(*, url: str, out: Path) -> BackupResult:
    """Write a backup of the database at `url` (any accepted form) to `out`."""
    url = to_sqlalchemy_url(url)
    out.parent.mkdir(parents=True, exist_ok=True)
    if make_url(url).get_backend_name() == "sqlite":
        source = sqlite3.connect(_sqlite_path(url))
        target = sqlite3.connect(out)
        try:
            with target:
                source.backup(target)
        finally:
            target.close()
            source.close()
        engine = make_engine(f"sqlite:///{out}")
    else:
        _run([_tool("pg_dump"), "--format=custom", f"--file={out}", to_libpq_url(url)])
        engine = None
    counts = table_counts(engine) if engine is not None else {}
    if engine is not None:
        engine.dispose()
    return BackupResult(path=out, bytes=out.stat().st_size, counts=counts)


def restore(*, backup_file: Path, url: str) -> dict[str, int]:
    """Restore `backup_file` into the empty database at `url`; returns its table counts.

    SQLite: `url`'s file must not exist yet (restoring over a live file would lose writes).
    Postgres: the database must exist and be empty (createdb, then this)."""
    url = to_sqlalchemy_url(url)
    if not backup_file.exists():
        raise BackupError(f"no backup at {backup_file}")
    if make_url(url).get_backend_name() == "sqlite":
        target = _sqlite_path(url)
        if target.exists():
            raise BackupError(f"{target} exists; restore into a new file, then swap it in")
        target.parent.mkdir(parents=True, exist_ok=True)
        source = sqlite3.connect(backup_file)
        dest = sqlite3.connect(target)
        try:
            with dest:
                source.backup(dest)
        finally:
            dest.close()
            source.close()
    else:
        _run(
            [
                _tool("pg_restore"),
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                f"--dbname={to_libpq_url(url)}",
                str(backup_file),
            ]
        )
    engine = make_engine(url)
    try:
        return table_counts(engine)
    finally:
        engine.dispose()


def check(*, backup_file: Path, kind: str, scratch_url: str | None = None) -> dict[str, int]:
    """Restore into a scratch database and count its rows: a backup that restores.

    SQLite: a temporary file. Postgres: a new database next to `scratch_url` (any database on
    the server where the user may CREATE DATABASE), dropped afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as work:
            return restore(backup_file=backup_file, url=f"sqlite:///{Path(work) / 'check.db'}")
    if scratch_url is None:
        raise BackupError("a Postgres backup check needs --scratch-db (a server to restore on)")
    admin = to_libpq_url(scratch_url)
    name = f"backup_check_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # a generated name, never user input
    try:
        target = make_url(to_sqlalchemy_url(scratch_url)).set(database=name)
        return restore(backup_file=backup_file, url=target.render_as_string(hide_password=False))
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="back up the configured database to FILE")
    create.add_argument("file", type=Path)
    verify = sub.add_parser("check", help="restore FILE into a scratch database and count rows")
    verify.add_argument("file", type=Path)
    verify.add_argument("--scratch-db", help="Postgres server URL to restore on (Postgres only)")
    for command in (create, verify):
        command.add_argument("--db", help="database URL (default: the configured one)")
    args = parser.parse_args(argv)
    try:
        url = to_sqlalchemy_url(args.db) if args.db else get_settings().sqlalchemy_url
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    engine = make_engine(url)
    task = "backup" if args.command == "create" else "backup_check"
    try:
        run_id = start_run(engine, task)
        try:
            if args.command == "create":
                result = backup(url=url, out=args.file)
                detail = f"{args.file.name}: {result.bytes:,} bytes"
                rows: int | None = result.rows if result.counts else None
            else:
                kind = make_url(url).get_backend_name()
                counts = check(backup_file=args.file, kind=kind, scratch_url=args.scratch_db or url)
                rows = sum(counts.values())
                tables = len(counts)
                detail = f"{args.file.name} restores: {tables} tables, {rows:,} rows"
        except BackupError as error:
            finish_run(engine, run_id, status="error", detail=str(error))
            print(f"error: {error}", file=sys.stderr)
            return 1
        finish_run(engine, run_id, status="ok", rows=rows, detail=detail)
    finally:
        engine.dispose()
    print(f"{task} of {describe(url)}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
