"""What recording adds to a chat turn, and how fast call rows go in.

Prints one JSON object: record_overhead_p95_ms (recording one call inside a turn: row insert,
commit and metrics) and ingest_calls_per_s (batched inserts).

    python bench/record.py [--db URL] [--calls N] [--batch N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from data.config.settings import get_settings
from data.config.urls import to_sqlalchemy_url
from data.store.db import describe, make_engine
from data.store.migrate import upgrade
from data.store.recorder import Recorder, record_calls
from data.store.records import CallRecord


def sample_call(i: int) -> CallRecord:
    return CallRecord(
        user_id=f"bench-user-{i % 200}",
        session_id=f"bench-{i % 2000}",
        turn=i % 40,
        purpose="chat",
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=3000 + i % 500,
        cached_input_tokens=1024,
        output_tokens=180,
        cost_usd=0.00051,
        cost_status="computed",
        latency_ms=812.5,
        ttft_ms=210.0,
        context_tokens=3000 + i % 500,
        context_window=128_000,
    )


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: the configured one)")
    parser.add_argument("--single", type=int, default=2000, help="single recordings to time")
    parser.add_argument("--calls", type=int, default=100_000, help="rows for the ingest test")
    parser.add_argument("--batch", type=int, default=5_000)
    args = parser.parse_args()
    url = to_sqlalchemy_url(args.db) if args.db else get_settings().sqlalchemy_url
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as connection:  # bench rows only; real rows are untouched
        connection.execute(text("DELETE FROM model_calls WHERE session_id LIKE 'bench-%'"))

    recorder = Recorder(engine)
    for i in range(50):  # warm the pool and the statement cache
        recorder(sample_call(i))
    timings = []
    for i in range(args.single):
        started = time.perf_counter()
        recorder(sample_call(i))
        timings.append((time.perf_counter() - started) * 1000)

    calls = [sample_call(i) for i in range(args.calls)]
    started = time.perf_counter()
    for i in range(0, len(calls), args.batch):
        record_calls(engine=engine, calls=calls[i : i + args.batch])
    ingest_s = time.perf_counter() - started

    with engine.begin() as connection:
        connection.execute(text("DELETE FROM model_calls WHERE session_id LIKE 'bench-%'"))
    print(
        json.dumps(
            {
                "db": engine.dialect.name,
                "where": describe(url),
                "record_overhead_p50_ms": round(percentile(timings, 50), 3),
                "record_overhead_p95_ms": round(percentile(timings, 95), 3),
                "ingest_calls_per_s": round(args.calls / ingest_s),
                "single_calls": args.single,
                "ingest_calls": args.calls,
                "batch": args.batch,
            }
        )
    )


if __name__ == "__main__":
    main()
