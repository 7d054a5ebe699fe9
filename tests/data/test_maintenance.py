"""Operations on SQLite and Postgres: retention keeps the rollups' history, a backup restores
with nothing lost, and `python -m data.store.maintain` runs ANALYZE/VACUUM and records when."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, delete, func, select

from data.analytics.context_usage import context_histogram
from data.analytics.cost import cost_over_time, cost_totals
from data.analytics.filters import Filters
from data.analytics.rollups import refresh
from data.config.settings import load_settings
from data.store.backup import BackupError, backup, check, restore, table_counts
from data.store.db import make_engine
from data.store.demo import generate
from data.store.maintain import last_runs, maintain
from data.store.orm import AgentEvent, Message, ModelCall
from data.store.orm_rollups import RollupDirty
from data.store.orm_support import Order
from data.store.retention import apply_retention, cutoff_for
from tests.helpers.db import fresh_postgres
from tests.helpers.servers import PG_ADMIN_URL, ROOT

NOW = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)
CALLS = 1_200


def window(start: datetime, end: datetime, unit: str = "day") -> Filters:
    return Filters(start=start, end=end, preset="custom", unit=unit, unit_auto=False)  # type: ignore[arg-type]


@pytest.fixture
def history(engine: Engine) -> Engine:
    """20 days of demo traffic ending at NOW, with messages, agent events and orders (the shared
    test databases keep orders between tests, so they start empty here)."""
    with engine.begin() as connection:
        connection.execute(delete(Order))
    generate(
        engine=engine, days=20, users=15, sessions=80, calls=CALLS, seed=11, end=NOW, support=True
    )
    refresh(engine)
    return engine


def raw_sums(engine: Engine, start: datetime, end: datetime) -> dict[str, float]:
    """The old range's figures straight from the raw rows, with pandas (independent of data/)."""
    with engine.connect() as connection:
        rows = pd.DataFrame(
            connection.execute(
                select(ModelCall.__table__).where(ModelCall.ts >= start, ModelCall.ts < end)
            )
            .mappings()
            .all()
        )
    return {
        "calls": len(rows),
        "input_tokens": int(rows["input_tokens"].sum()),
        "output_tokens": int(rows["output_tokens"].sum()),
        "cost_usd": float(rows["cost_usd"].fillna(0).sum()),
        "sessions": rows["session_id"].nunique(),
        "users": rows["user_id"].nunique(),
    }


def count(engine: Engine, column, before: datetime, *, since: bool = False) -> int:  # type: ignore[no-untyped-def]
    """Rows with `column` before `before` (or at or after it, with since=True)."""
    condition = column >= before if since else column < before
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).where(condition)).scalar_one())


def test_retention_deletes_old_raw_rows_and_keeps_the_totals(history: Engine) -> None:
    engine = history
    cutoff = cutoff_for(7, now=NOW)
    assert cutoff == datetime(2026, 11, 23, tzinfo=UTC)
    old = window(NOW - timedelta(days=25), cutoff)
    spanning = window(cutoff - timedelta(days=3), cutoff + timedelta(days=3))
    recent = window(cutoff, NOW.replace(hour=0) + timedelta(days=1))
    expected_old = raw_sums(engine, old.start, old.end)
    assert expected_old["calls"] > 500
    before = {
        name: (cost_totals(engine=engine, filters=f), cost_over_time(engine=engine, filters=f))
        for name, f in (("old", old), ("spanning", spanning), ("recent", recent))
    }
    context_before = context_histogram(engine=engine, filters=old)
    kept_calls = count(engine, ModelCall.ts, cutoff, since=True)  # ts >= cutoff
    old_events = count(engine, AgentEvent.ts, cutoff)
    old_messages = count(engine, Message.created_at, cutoff)
    assert old_events > 0 and old_messages > 0

    result = apply_retention(engine=engine, days=7, batch=250, now=NOW)

    assert result.model_calls == expected_old["calls"]
    assert (result.agent_events, result.messages) == (old_events, old_messages)
    assert result.batches > result.model_calls // 250
    assert count(engine, ModelCall.ts, cutoff) == 0
    assert count(engine, AgentEvent.ts, cutoff) == 0
    assert count(engine, Message.created_at, cutoff) == 0
    assert count(engine, ModelCall.ts, cutoff, since=True) == kept_calls
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(RollupDirty)).scalar() == 0
    refresh(engine)  # a later refresh (the pages call it) must not touch the old hours
    for name, f in (("old", old), ("spanning", spanning), ("recent", recent)):
        totals, over_time = before[name]
        assert cost_totals(engine=engine, filters=f) == totals, name
        pd.testing.assert_frame_equal(cost_over_time(engine=engine, filters=f), over_time)
    after = asdict(cost_totals(engine=engine, filters=old))
    for key, value in expected_old.items():
        assert after[key] == pytest.approx(value, rel=1e-9), key
    pd.testing.assert_frame_equal(context_histogram(engine=engine, filters=old), context_before)


def test_retention_rejects_bad_settings(engine: Engine) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        apply_retention(engine=engine, days=0)
    with pytest.raises(ValueError, match="RETENTION_BATCH"):
        apply_retention(engine=engine, days=3, batch=0)


@pytest.fixture
def empty_target(db_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind to restore into."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored.sqlite3'}"
        return
    with fresh_postgres("acb_restore", migrate=False) as url:
        yield url


def test_backup_restores_every_row_and_the_cost_totals(
    history: Engine, db_url: str, empty_target: str, tmp_path: Path
) -> None:
    engine = history
    everything = window(NOW - timedelta(days=30), NOW.replace(hour=0) + timedelta(days=1))
    counts = table_counts(engine)
    assert counts["model_calls"] == CALLS and counts["messages"] > 0
    assert "alembic_version" in counts
    totals = cost_totals(engine=engine, filters=everything)
    over_time = cost_over_time(engine=engine, filters=everything)

    result = backup(url=db_url, out=tmp_path / "backup.dump")
    assert result.bytes > 10_000
    restored_counts = restore(backup_file=result.path, url=empty_target)

    assert restored_counts == counts
    restored = make_engine(empty_target)
    try:
        assert cost_totals(engine=restored, filters=everything) == totals
        pd.testing.assert_frame_equal(
            cost_over_time(engine=restored, filters=everything), over_time
        )
    finally:
        restored.dispose()
    kind = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    assert check(backup_file=result.path, kind=kind, scratch_url=PG_ADMIN_URL) == counts


def test_restore_refuses_to_overwrite_a_sqlite_file(tmp_path: Path, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        with pytest.raises(BackupError, match="pg_restore failed"):
            restore(backup_file=Path(__file__), url=db_url)
        return
    out = backup(url=db_url, out=tmp_path / "b.sqlite3").path
    with pytest.raises(BackupError, match="exists"):
        restore(backup_file=out, url=db_url)


def test_maintain_runs_and_records_each_task(history: Engine) -> None:
    settings = load_settings(retention_days=None)
    runs = maintain(engine=history, settings=settings)
    assert [r.task for r in runs] == ["partitions", "retention", "analyze", "vacuum"]
    assert all(r.status == "ok" and r.finished_at is not None for r in runs)
    assert runs[1].rows == 0 and "RETENTION_DAYS is not set" in (runs[1].detail or "")
    if history.dialect.name == "postgresql":  # the migration made this month and three ahead
        assert "monthly partitions up to" in (runs[0].detail or "")
    else:
        assert runs[0].detail.startswith("SQLite keeps model_calls in one table")  # type: ignore[union-attr]
    latest = last_runs(engine=history)
    assert set(latest) == {"partitions", "retention", "analyze", "vacuum"}
    again = maintain(engine=history, settings=settings, tasks=("analyze",))
    assert last_runs(engine=history)["analyze"].started_at == again[0].started_at
    assert last_runs(engine=history)["analyze"].started_at > latest["analyze"].started_at


def test_maintain_and_backup_commands(db_url: str, tmp_path: Path) -> None:
    """The commands an operator runs (docs/operations.md), on the configured database."""
    env = {"DATABASE_URL": db_url, "RETENTION_DAYS": "30", "PATH": "/usr/bin:/bin"}
    maintained = subprocess.run(
        [sys.executable, "-m", "data.store.maintain"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert maintained.returncode == 0, maintained.stderr
    assert "retention: ok" in maintained.stdout and "vacuum: ok" in maintained.stdout
    out = tmp_path / "monthly.backup"
    for command in (["create", str(out)], ["check", str(out)]):
        done = subprocess.run(
            [sys.executable, "-m", "data.store.backup", *command, "--db", db_url],
            cwd=ROOT,
            env={**env, "DATABASE_URL": ""},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    engine = make_engine(db_url)
    try:
        runs = last_runs(engine=engine)
    finally:
        engine.dispose()
    assert {"partitions", "retention", "analyze", "vacuum", "backup", "backup_check"} <= set(runs)
    assert runs["backup_check"].status == "ok" and "restores" in (runs["backup_check"].detail or "")
