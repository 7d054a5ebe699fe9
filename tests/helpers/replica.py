"""A real Postgres primary and hot standby for the replica drill: `initdb`, `pg_basebackup -R`,
both on 127.0.0.1 on ports of their own, in a temporary folder, stopped at the end.

The machine's Postgres binaries (Debian's postgresql-15, on every machine of this project's
kind) run the pair. Postgres refuses to run as root, so as root the clusters belong to the
`postgres` user. With CI=true missing binaries fail the drill instead of skipping it."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from data.store.db import make_engine, register_replica
from data.store.migrate import upgrade
from tests.helpers.servers import free_port


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        message = "no Postgres server binaries (/usr/lib/postgresql/*/bin/initdb)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return Path(found[-1]).parent


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class Pair:
    root: Path
    bindir: Path
    primary_port: int
    standby_port: int

    def url(self, port: int, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    def _ctl(self, name: str, *args: str) -> None:
        subprocess.run(
            _as_owner(
                [str(self.bindir / "pg_ctl"), "-D", str(self.root / name), "-w", "-t", "60", *args]
            ),
            check=True,
            capture_output=True,
        )

    def engines(self, database: str = "acb") -> tuple[Engine, Engine]:
        """Create `database` on the primary, migrate it, and return (primary, standby) engines,
        the standby's registered as the primary's read replica."""
        admin = make_engine(self.url(self.primary_port))
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text(f'CREATE DATABASE "{database}"'))
        admin.dispose()
        upgrade(self.url(self.primary_port, database))
        primary = make_engine(self.url(self.primary_port, database))
        standby = make_engine(self.url(self.standby_port, database))
        register_replica(standby, primary)
        return primary, standby

    def start_standby(self) -> None:
        self._ctl("standby", "-l", str(self.root / "standby.log"), "start")

    def stop_standby(self) -> None:
        self._ctl("standby", "-m", "fast", "stop")


@contextmanager
def streaming_pair() -> Iterator[Pair]:
    """A primary and a streaming hot standby of it, started; stopped and removed at the end.
    In a folder of its own under the system's temporary folder (pytest's is private to root,
    and the clusters' owner must reach it)."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="acb-replica-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    pair = Pair(root, bindir, free_port(), free_port())
    primary = root / "primary"
    subprocess.run(
        _as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(primary),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(pair.primary_port),
        "unix_socket_directories": f"'{root}'",
        "wal_level": "replica",
        "max_wal_senders": "5",
        "fsync": "off",  # a drill's throwaway clusters
        "hot_standby_feedback": "on",
    }
    with (primary / "postgresql.conf").open("a") as conf:
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
    with (primary / "pg_hba.conf").open("a") as hba:
        hba.write("host replication all 127.0.0.1/32 trust\n")
    started: list[str] = []
    try:
        pair._ctl("primary", "-l", str(root / "primary.log"), "start")
        started.append("primary")
        subprocess.run(
            _as_owner(
                [
                    str(bindir / "pg_basebackup"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(pair.primary_port),
                    "-U",
                    "postgres",
                    "-D",
                    str(root / "standby"),
                    "-R",  # standby.signal and primary_conninfo: a streaming hot standby
                    "-X",
                    "stream",
                ]
            ),
            check=True,
            capture_output=True,
        )
        with (root / "standby" / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {pair.standby_port}\n")
        pair.start_standby()
        started.append("standby")
        yield pair
    finally:
        for name in reversed(started):
            subprocess.run(
                _as_owner(
                    [str(bindir / "pg_ctl"), "-D", str(root / name), "-m", "immediate", "stop"]
                ),
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)
