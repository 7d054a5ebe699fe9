"""model_calls in monthly partitions on Postgres: the migration converts a table that holds
calls (rows, ids and triggers carry on), partitions are made ahead and take in the calls that
waited in the default partition, retention drops whole months and the rollups keep their
figures exact, and SQLite keeps one table with the same behaviour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import Engine, func, insert, select, text

from data.analytics.cost import cost_totals
from data.analytics.filters import Filters
from data.analytics.rollups import refresh
from data.store import partitions
from data.store.db import make_engine
from data.store.demo import generate
from data.store.migrate import downgrade, upgrade
from data.store.orm import ModelCall
from data.store.orm_rollups import RollupDirty
from data.store.retention import apply_retention
from tests.helpers.db import fresh_postgres

NOW = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)
M = ModelCall.__table__


def window(start: datetime, end: datetime) -> Filters:
    return Filters(start=start, end=end, preset="custom", unit="day", unit_auto=False)  # type: ignore[arg-type]


def call(ts: datetime, cost: float = 0.01) -> dict[str, object]:
    return {
        "ts": ts,
        "user_id": "u",
        "session_id": "s",
        "turn": 1,
        "purpose": "chat",
        "provider": "local",
        "model": "m",
        "input_tokens": 100,
        "output_tokens": 10,
        "cost_usd": cost,
        "cost_status": "priced",
        "latency_ms": 50.0,
        "context_tokens": 100,
    }


def where_rows_are(engine: Engine) -> dict[str, int]:
    """Calls per partition, by the table that holds them (tableoid)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT tableoid::regclass::text, count(*) FROM model_calls GROUP BY 1")
        ).all()
    return {str(name): int(n) for name, n in rows}


@pytest.mark.postgres
def test_the_migration_converts_a_table_that_holds_calls() -> None:
    with fresh_postgres("partition_migration", migrate=False) as url:
        engine = make_engine(url)
        try:
            upgrade(url, "0015")
            old = [call(datetime(2026, m, 10, tzinfo=UTC), cost=0.01 * m) for m in (8, 9, 9, 10)]
            with engine.begin() as connection:
                connection.execute(insert(M), old)
            # (plain SQL: the app's refresh needs the current schema)
            with engine.connect() as connection:
                before = tuple(
                    connection.execute(
                        text("SELECT count(*), sum(cost_usd) FROM model_calls")
                    ).one()
                )
            upgrade(url)
            with engine.connect() as connection:
                assert partitions.is_partitioned(connection)
                names = [p.name for p in partitions.partitions(connection)]
            this = partitions.month_start(datetime.now(UTC))
            ahead = [partitions.of_month(partitions.add_months(this, n)).name for n in range(4)]
            assert names[:3] == [
                "model_calls_2026_08",
                "model_calls_2026_09",
                "model_calls_2026_10",
            ]
            assert set(ahead) <= set(names)
            assert where_rows_are(engine) == {
                "model_calls_2026_08": 1,
                "model_calls_2026_09": 2,
                "model_calls_2026_10": 1,
            }
            # The figures, the id sequence and the rollup triggers carry on.
            after = cost_totals(engine=engine, filters=window(NOW - timedelta(days=150), NOW))
            assert (after.calls, after.cost_usd) == pytest.approx(before)
            with engine.begin() as connection:
                connection.execute(text("DELETE FROM rollup_dirty"))
                new_id = connection.execute(
                    insert(M).values(call(datetime(2026, 10, 20, 7, tzinfo=UTC))).returning(M.c.id)
                ).scalar_one()
                dirty = connection.execute(select(RollupDirty.hour)).scalars().all()
            assert new_id == 5
            assert [h.astimezone(UTC) for h in dirty] == [datetime(2026, 10, 20, 7, tzinfo=UTC)]
            # Down and up again, with the rows.
            downgrade(url, "0015")
            with engine.connect() as connection:
                assert not partitions.is_partitioned(connection)
                assert connection.execute(text("SELECT count(*) FROM model_calls")).scalar() == 5
            upgrade(url)
            assert sum(where_rows_are(engine).values()) == 5
        finally:
            engine.dispose()


@pytest.mark.postgres
def test_a_month_without_a_partition_waits_in_the_default_one() -> None:
    with fresh_postgres("partition_default") as url:
        engine = make_engine(url)
        try:
            far = partitions.add_months(partitions.month_start(datetime.now(UTC)), 7)
            with engine.begin() as connection:
                connection.execute(insert(M), [call(far + timedelta(days=d)) for d in (1, 2)])
            assert where_rows_are(engine) == {partitions.DEFAULT: 2}
            created = partitions.ensure(engine, now=far)
            assert partitions.of_month(far).name in created
            assert where_rows_are(engine) == {partitions.of_month(far).name: 2}
            assert partitions.ensure(engine, now=far) == []  # nothing twice
            # A loader about to write history asks for its months first.
            since = datetime(2025, 11, 5, tzinfo=UTC)
            made = partitions.ensure(engine, since=since)
            assert made[0] == "model_calls_2025_11" and "model_calls_2026_06" in made
        finally:
            engine.dispose()


def test_retention_drops_whole_months_and_the_rollups_keep_them(engine: Engine) -> None:
    generate(engine=engine, days=75, users=10, sessions=60, calls=1_500, seed=3, end=NOW)
    if engine.dialect.name == "postgresql":  # the demo made its months before writing
        assert partitions.DEFAULT not in where_rows_are(engine)
    refresh(engine)
    old = window(NOW - timedelta(days=80), datetime(2026, 10, 16, tzinfo=UTC))
    before = cost_totals(engine=engine, filters=old)
    with engine.connect() as connection:
        doomed = connection.execute(
            select(func.count()).select_from(M).where(M.c.ts < old.end)
        ).scalar_one()
        kept = connection.execute(
            select(func.count()).select_from(M).where(M.c.ts >= old.end)
        ).scalar_one()
    result = apply_retention(engine=engine, days=45, batch=200, now=NOW)
    assert result.cutoff == old.end
    assert result.model_calls == doomed > 0
    with engine.connect() as connection:
        left = pd.read_sql(select(M.c.ts), connection)
    assert len(left) == kept and (pd.to_datetime(left["ts"], utc=True) >= old.end).all()
    if engine.dialect.name == "postgresql":
        # September went whole; October only row by row (it straddles the cutoff).
        assert result.months_dropped == ("model_calls_2026_09",)
        assert "model_calls_2026_09" not in where_rows_are(engine)
        assert "model_calls_2026_10" in where_rows_are(engine)
    else:
        assert result.months_dropped == ()
    refresh(engine)
    assert cost_totals(engine=engine, filters=old) == before
