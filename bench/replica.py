"""What a read replica costs an analyst view: `data.analytics.replica.choose()` on a real primary
and hot standby (tests/helpers/replica.py starts them: initdb, pg_basebackup -R), and the Cost
page's data read from each.

Prints one JSON object: `choose_p50_ms`, `choose_p95_ms` with the standby caught up and nothing
to refresh (the cost every view pays), `choose_after_call_p50_ms` after one new call (the
refresh on the primary, then the wait for the standby to replay it), `replay_lag_*_ms` (how long
the standby took to replay one new call), and `cost_page_primary_p50_ms` beside
`cost_page_standby_p50_ms` (the same 90-day view, read from each) on --calls calls of demo
history.

    python bench/replica.py [--calls 200000] [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from data.analytics import cost, replica
from data.analytics.filters import Filters
from data.analytics.rollups import refresh
from data.store.demo import generate
from data.store.recorder import record_calls
from tests.helpers.records import call
from tests.helpers.replica import streaming_pair


def pct(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 2)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    result: dict[str, object] = {"load_1m": os.getloadavg()[0], "calls": args.calls}
    with streaming_pair() as pair:
        primary, standby = pair.engines()
        end = datetime.now(UTC)
        generate(
            engine=primary,
            days=90,
            users=500,
            sessions=args.calls // 25,
            calls=args.calls,
            seed=3,
            end=end,
        )
        refresh(primary)
        for _ in range(20):
            replica.choose(primary, standby, max_wait_s=5)
        idle = [
            timed(lambda: replica.choose(primary, standby, max_wait_s=5)) for _ in range(args.runs)
        ]
        after, lags = [], []
        for i in range(min(args.runs, 100)):
            record_calls(engine=primary, calls=[call(user_id=f"bench-{i}", session_id=f"b{i}")])
            with primary.connect() as connection:
                lsn = connection.execute(text("SELECT pg_current_wal_flush_lsn()::text")).scalar()
            started = time.perf_counter()
            with standby.connect() as connection:
                while not connection.execute(
                    text("SELECT pg_last_wal_replay_lsn() >= CAST(:l AS pg_lsn)"), {"l": lsn}
                ).scalar():
                    connection.rollback()
            lags.append((time.perf_counter() - started) * 1000)
            after.append(timed(lambda: replica.choose(primary, standby, max_wait_s=5)))
        filters = Filters(start=end - timedelta(days=90), end=end, preset="custom")
        pages = {}
        for name, engine in (("primary", primary), ("standby", standby)):
            cost.page_data(engine=engine, filters=filters)
            pages[name] = [
                timed(lambda engine=engine: cost.page_data(engine=engine, filters=filters))
                for _ in range(20)
            ]
        totals = {
            n: cost.page_data(engine=e, filters=filters).totals.cost_usd
            for n, e in (("primary", primary), ("standby", standby))
        }
        assert abs(totals["primary"] - totals["standby"]) < 1e-9, totals
        result.update(
            {
                "choose_p50_ms": pct(idle, 50),
                "choose_p95_ms": pct(idle, 95),
                "choose_after_call_p50_ms": pct(after, 50),
                "choose_after_call_p95_ms": pct(after, 95),
                "replay_lag_p50_ms": pct(lags, 50),
                "replay_lag_p95_ms": pct(lags, 95),
                "cost_page_primary_p50_ms": pct(pages["primary"], 50),
                "cost_page_standby_p50_ms": pct(pages["standby"], 50),
                "load_1m_after": os.getloadavg()[0],
            }
        )
        primary.dispose()
        standby.dispose()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
