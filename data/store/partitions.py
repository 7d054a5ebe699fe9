"""Monthly partitions of model_calls on Postgres: the way to 100M calls on one database.

On Postgres, model_calls is partitioned by month on `ts` (declarative range partitions, one
table `model_calls_YYYY_MM` per UTC month, migration 0016). Partitions are created ahead of
time, never by hand: by the migrations (the run command applies them at every start) and by
`python -m data.store.maintain` (its `partitions` task), AHEAD_MONTHS months past the current
one. A call for a month with no partition yet lands in `model_calls_default` instead of
failing, and moves into its month when that month's partition is created.

Retention drops the partitions that end before its cutoff whole (no row by row delete, no
dead rows to vacuum) and deletes the rest row by row as before. A dropped partition fires no
trigger, so the rollups keep those months' history exactly, as retention wants.

Why not pg_partman: its Debian package adds an extension and a background worker for what is
one CREATE TABLE a month here, created by the code that already runs every start and every
week. SQLite keeps one table, with the same behaviour."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text

from data.store.orm import utcnow

PARENT = "model_calls"
DEFAULT = "model_calls_default"
AHEAD_MONTHS = 3
LOCK = 0x61636270  # "acbp": one creator of partitions at a time
_NAME = re.compile(r"^model_calls_(\d{4})_(\d{2})$")


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start: datetime  # the month's first instant, UTC
    end: datetime  # the next month's


def month_start(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return datetime(ts.year, ts.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def of_month(month: datetime) -> Partition:
    month = month_start(month)
    return Partition(f"{PARENT}_{month:%Y_%m}", month, add_months(month, 1))


def is_partitioned(connection: Connection) -> bool:
    if connection.dialect.name != "postgresql":
        return False
    return bool(
        connection.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table "
                "WHERE partrelid = to_regclass(:parent))"
            ),
            {"parent": PARENT},
        ).scalar()
    )


def partitions(connection: Connection) -> list[Partition]:
    """The monthly partitions, oldest first (the default partition apart)."""
    names = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:parent)"
        ),
        {"parent": PARENT},
    ).scalars()
    found = []
    for name in names:
        match = _NAME.match(name)
        if match:
            found.append(of_month(datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)))
    return sorted(found, key=lambda p: p.start)


def _locked(connection: Connection) -> bool:
    """On a partitioned model_calls, take the one-changer-at-a-time lock (for the
    transaction) and say True; False elsewhere (SQLite, one table)."""
    if not is_partitioned(connection):
        return False
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK})
    return True


def _literal(ts: datetime) -> str:
    return f"'{ts.astimezone(UTC):%Y-%m-%d %H:%M:%S}+00'"


def create_month(connection: Connection, month: datetime) -> int:
    """Create one month's partition; the calls of that month waiting in the default partition
    move into it in the same transaction. Returns how many moved."""
    p = of_month(month)
    bounds = f"FROM ({_literal(p.start)}) TO ({_literal(p.end)})"
    has_default = connection.execute(
        text("SELECT to_regclass(:name) IS NOT NULL"), {"name": DEFAULT}
    ).scalar()
    waiting = 0
    if has_default:
        waiting = connection.execute(
            text(f"SELECT count(*) FROM {DEFAULT} WHERE ts >= :start AND ts < :end"),
            {"start": p.start, "end": p.end},
        ).scalar_one()
    if not waiting:
        connection.exec_driver_sql(
            f"CREATE TABLE {p.name} PARTITION OF {PARENT} FOR VALUES {bounds}"
        )
        return 0
    # Rows for this month sit in the default partition: a plain table takes them, then is
    # attached (deleting from the partition itself fires none of model_calls' triggers).
    connection.exec_driver_sql(f"CREATE TABLE {p.name} (LIKE {PARENT} INCLUDING DEFAULTS)")
    connection.execute(
        text(
            f"WITH moved AS (DELETE FROM {DEFAULT} WHERE ts >= :start AND ts < :end "
            f"RETURNING *) INSERT INTO {p.name} SELECT * FROM moved"
        ),
        {"start": p.start, "end": p.end},
    )
    connection.exec_driver_sql(
        f"ALTER TABLE {PARENT} ATTACH PARTITION {p.name} FOR VALUES {bounds}"
    )
    return int(waiting)


def ensure_in(
    connection: Connection,
    *,
    now: datetime | None = None,
    ahead: int = AHEAD_MONTHS,
    since: datetime | None = None,
) -> list[str]:
    """Create the missing partitions from the oldest month that has calls (or this month, or
    the month of `since` if older: a loader about to write history) to `ahead` months past
    this one, and the default partition; the names created. Nothing on SQLite or on an
    unpartitioned table."""
    if not _locked(connection):
        return []
    created = []
    if not connection.execute(text("SELECT to_regclass(:n)"), {"n": DEFAULT}).scalar():
        connection.exec_driver_sql(f"CREATE TABLE {DEFAULT} PARTITION OF {PARENT} DEFAULT")
        created.append(DEFAULT)
    have = {p.name for p in partitions(connection)}
    this = month_start(now or utcnow())
    oldest = connection.execute(text(f"SELECT min(ts) FROM {DEFAULT}")).scalar()
    first = min(this, month_start(oldest)) if oldest is not None else this
    wanted = month_start(since) if since is not None else this
    month = min(first, wanted)
    while month <= add_months(this, ahead):
        p = of_month(month)
        if p.name not in have and (month >= wanted or _has_calls(connection, p)):
            create_month(connection, month)
            created.append(p.name)
        month = add_months(month, 1)
    return created


def _has_calls(connection: Connection, p: Partition) -> bool:
    return bool(
        connection.execute(
            text(f"SELECT EXISTS (SELECT 1 FROM {DEFAULT} WHERE ts >= :start AND ts < :end)"),
            {"start": p.start, "end": p.end},
        ).scalar()
    )


def ensure(
    engine: Engine,
    *,
    now: datetime | None = None,
    ahead: int = AHEAD_MONTHS,
    since: datetime | None = None,
) -> list[str]:
    with engine.begin() as connection:
        return ensure_in(connection, now=now, ahead=ahead, since=since)


def drop_before(engine: Engine, cutoff: datetime) -> tuple[list[str], int]:
    """Drop the monthly partitions that end at or before `cutoff`, whole: (names, calls)."""
    with engine.begin() as connection:
        if not _locked(connection):
            return [], 0
        dropped, calls = [], 0
        for p in partitions(connection):
            if p.end <= cutoff:
                calls += connection.execute(text(f"SELECT count(*) FROM {p.name}")).scalar_one()
                connection.exec_driver_sql(f"DROP TABLE {p.name}")
                dropped.append(p.name)
        return dropped, calls
