"""Budget check speed at a large call table: what the agent waits for before each model call.

Loads N calls (default 200,000) of demo traffic over the last 30 days, rolls them up, adds a few
calls in the current hour (which are read raw), then times `Guard.admit` + `release` (reserve,
read the spend of every budget that covers the user, release) for a user budget, a prefix
budget and a global budget together. Prints one JSON object per database.

    python bench/budgets.py [--rows N] [--db URL ...] [--checks K]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import insert

from data.analytics.rollups import refresh
from data.config.urls import to_libpq_url, to_sqlalchemy_url
from data.store.db import describe, make_engine
from data.store.demo import generate
from data.store.migrate import upgrade
from data.store.orm import ModelCall
from data.workflows import budgets
from data.workflows.budget_guard import Guard


def fresh_postgres(url: str) -> str:
    """Recreate the named database for a clean run."""
    libpq = to_libpq_url(url)
    name = libpq.rsplit("/", 1)[1]
    admin = libpq.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return to_sqlalchemy_url(url)


def bench(url: str, rows: int, checks: int) -> dict[str, object]:
    upgrade(url)
    engine = make_engine(url)
    now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    generate(engine=engine, calls=rows, sessions=max(rows // 25, 1), end=hour, messages=False)
    refresh(engine)
    current = [
        dict(
            ts=hour + timedelta(seconds=i),
            user_id=f"demo-user-{1 + i % 20:03d}",
            session_id=f"now-{i}",
            turn=1,
            purpose="chat",
            provider="openai",
            model="gpt-4o-mini",
            input_tokens=1000,
            cached_input_tokens=0,
            output_tokens=100,
            usage_source="provider",
            cost_usd=0.0002,
            cost_status="computed",
            latency_ms=500.0,
            context_tokens=1000,
            context_window=128_000,
            status="ok",
        )
        for i in range(200)
    ]
    with engine.begin() as connection:
        connection.execute(insert(ModelCall), current)
    if engine.dialect.name == "postgresql":
        # What autovacuum does soon after a bulk load; without it the planner scans the table.
        with engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE model_calls")
    for kind, value, period in (
        ("user", "demo-user-001", "day"),
        ("prefix", "demo-user-00", "month"),
        ("all", "", "month"),
    ):
        budgets.create_budget(
            engine=engine,
            scope_kind=kind,
            scope_value=value,
            period=period,
            limit_usd=1e6,
            actor="bench",
        )
    guard = Guard(engine)
    times = []
    for _ in range(checks):
        started = time.perf_counter()
        admission = guard.admit(user_id="demo-user-001", estimate_usd=0.001)
        guard.release(admission.reservation_id)
        times.append((time.perf_counter() - started) * 1000)
        assert len(admission.states) == 3 and admission.refused is None
    cold = times[0]
    warm = sorted(times[1:])
    engine.dispose()
    return {
        "database": describe(url),
        "rows": rows,
        "budgets_checked_per_call": 3,
        "first_check_ms": round(cold, 2),
        "check_p50_ms": round(statistics.median(warm), 2),
        "check_p95_ms": round(warm[int(0.95 * (len(warm) - 1))], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--checks", type=int, default=200)
    parser.add_argument(
        "--db",
        action="append",
        help="database URL (repeatable); a Postgres database named here is dropped and recreated",
    )
    args = parser.parse_args(argv)
    tmp = tempfile.TemporaryDirectory()
    urls = args.db or [f"sqlite:///{tmp.name}/budgets.sqlite3"]
    out = []
    for url in urls:
        if url.startswith("postgres"):
            url = fresh_postgres(url)
        out.append(bench(url, args.rows, args.checks))
    print(json.dumps(out))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
