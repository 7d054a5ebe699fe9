"""The refresh a page view pays after one new call: narrow (the call's session and models in its
hour, migration 0017) against whole-hour (every call of the hour, as before), in alternating
rounds, in the history's last hour and in its busiest one.

Run it on a database that `bench/pages.py --db URL` has loaded (it applies the migrations
first and leaves the rows as it found them). Prints one JSON object: per mode and hour, the
calls in that hour and the refresh's p50, p95 and max in ms, with the machine's load average.

    python bench/refresh.py --db URL [--rounds 3] [--samples 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import Engine, text

from data.analytics import rollups
from data.config.urls import to_sqlalchemy_url
from data.store.db import describe, make_engine
from data.store.migrate import upgrade
from data.store.recorder import record_calls
from pages import one_call  # bench/pages.py

MODES = {"narrow": rollups.NARROW_SESSIONS, "whole": 0}  # 0: every listed hour goes whole


def hours(engine: Engine) -> dict[str, tuple[datetime, int]]:
    """The history's last hour and its busiest, each with its calls."""
    with engine.connect() as connection:
        last, busiest = connection.execute(
            text(
                "SELECT (SELECT max(hour) FROM rollup_hourly), (SELECT hour FROM rollup_hourly "
                "GROUP BY hour ORDER BY sum(calls) DESC LIMIT 1)"
            )
        ).one()
        out = {}
        for label, hour in (("last_hour", last), ("busiest_hour", busiest)):
            calls = connection.execute(
                text("SELECT sum(calls) FROM rollup_hourly WHERE hour = :h"), {"h": hour}
            ).scalar_one()
            out[label] = (hour, int(calls))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a database bench/pages.py loaded")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=10, help="calls per mode, hour and round")
    args = parser.parse_args()
    upgrade(args.db)
    engine = make_engine(to_sqlalchemy_url(args.db))
    rollups.refresh(engine)
    rollups.warm(engine)
    where = hours(engine)
    times: dict[str, dict[str, list[float]]] = {m: {h: [] for h in where} for m in MODES}
    n = 0
    for _ in range(args.rounds):
        for mode, limit in MODES.items():
            rollups.NARROW_SESSIONS = limit
            for label, (hour, _calls) in where.items():
                for _ in range(args.samples):
                    n += 1
                    ts = hour + timedelta(minutes=30)
                    record_calls(engine=engine, calls=[one_call(ts, f"bench-refresh-{n}")])
                    started = time.perf_counter()
                    rollups.refresh_hours(engine)
                    times[mode][label].append((time.perf_counter() - started) * 1000)
    rollups.NARROW_SESSIONS = MODES["narrow"]
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM model_calls WHERE session_id LIKE 'bench-refresh-%'"))
    rollups.refresh(engine)
    engine.dispose()

    def summary(samples: list[float]) -> dict[str, float]:
        p95 = statistics.quantiles(samples, n=20)[-1] if len(samples) >= 20 else max(samples)
        return {
            "p50_ms": round(statistics.median(samples), 1),
            "p95_ms": round(p95, 1),
            "max_ms": round(max(samples), 1),
        }

    print(
        json.dumps(
            {
                "db": describe(to_sqlalchemy_url(args.db)),
                "calls_in_hour": {label: calls for label, (_, calls) in where.items()},
                "refresh": {
                    mode: {label: summary(s) for label, s in per_hour.items()}
                    for mode, per_hour in times.items()
                },
                "load_1_5_15": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            }
        )
    )


if __name__ == "__main__":
    main()
