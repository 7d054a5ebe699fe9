"""Partitioned against unpartitioned model_calls on one Postgres, in turn: the analyst pages'
90-day views (no filter, one model, one user) on two copies of the same history, alternating
rounds so that the machine's drift falls on both alike. Prints JSON.

    python bench/partitions.py [--db URL] [--rounds N] [--runs N]

URL is a database that `bench/pages.py --db URL` loaded (partitioned, as the migrations make
it). Its copy `<name>_plain` is made once (CREATE DATABASE … TEMPLATE) and migration 0016 is
undone there, so it holds the same rows in one table."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pages import END, PG_DEFAULT, VIEWS, load_average, pages, sizes, timed
from data.analytics import cost
from data.analytics.filters import parse_filters
from data.config.urls import to_libpq_url, to_sqlalchemy_url
from data.store import partitions
from data.store.db import make_engine
from data.store.migrate import downgrade


def plain_copy(url: str) -> str:
    """`<name>_plain`: the database copied and its model_calls back in one table."""
    base, name = to_libpq_url(to_sqlalchemy_url(url)).rsplit("/", 1)
    plain = f"{name}_plain"
    with psycopg.connect(base + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (plain,)).fetchone():
            started = time.perf_counter()
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'CREATE DATABASE "{plain}" TEMPLATE "{name}"')
            print(
                f"copied {name} to {plain} ({time.perf_counter() - started:.0f} s)", file=sys.stderr
            )
    plain_url = to_sqlalchemy_url(url).rsplit("/", 1)[0] + f"/{plain}"
    engine = make_engine(plain_url)
    with engine.connect() as connection:
        partitioned = partitions.is_partitioned(connection)
    if partitioned:
        started = time.perf_counter()
        downgrade(plain_url, "0015")
        print(f"unpartitioned ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE model_calls")
    engine.dispose()
    return plain_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=PG_DEFAULT)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=11, help="runs per view (the first is cold)")
    args = parser.parse_args()
    urls = {"partitioned": to_sqlalchemy_url(args.db), "one table": plain_copy(args.db)}
    engines = {kind: make_engine(url) for kind, url in urls.items()}
    warm: dict[str, dict[str, list[float]]] = {kind: {} for kind in urls}
    loads = []
    for _ in range(args.rounds):
        for kind, engine in engines.items():
            loads.append(load_average())
            for view, params in VIEWS.items():
                f, _ = parse_filters(
                    {"range": "90d", **params},
                    known_models=cost.known_models(engine=engine),
                    now=END,
                )
                for name, fn in pages(engine, f).items():
                    key = f"{name}_90d{'_' + view if view else ''}"
                    warm[kind].setdefault(key, []).extend(timed(fn, args.runs)[1:])

    def p95(samples: list[float]) -> float:
        return round(statistics.quantiles(samples, n=20)[-1], 1)

    result = {
        "rows": {
            kind: sizes(engine, ("model_calls",), rollups=False)["model_calls"]
            for kind, engine in engines.items()
        },
        "rounds": args.rounds,
        "load_1_5_15": loads,
        "warm_p95_ms": {
            key: {kind: p95(warm[kind][key]) for kind in urls} for key in warm["partitioned"]
        },
    }
    for engine in engines.values():
        engine.dispose()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
