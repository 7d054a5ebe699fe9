"""Summarization replay speed on the demo history (goal: >= 200 sessions/s).

Loads the demo history (30 days, 2,000 sessions, 50,000 calls) into a fresh SQLite database
(or `--db URL`), then times, for every session: loading its recorded calls, rebuilding its
conversation and replaying it under the agent's current setting; and the 20-setting sweep.
Prints one JSON object.

    python bench/replay.py [--db URL] [--sessions N] [--repeat K]
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

from agent import replay, replay_sweep
from data.analytics import replay_sessions as recorded_data
from data.analytics.filters import Filters
from data.store.db import describe, make_engine
from data.store.demo import generate
from data.store.migrate import upgrade

END = datetime(2026, 11, 1, tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    tmp = tempfile.TemporaryDirectory()
    url = args.db or f"sqlite:///{tmp.name}/replay.sqlite3"
    upgrade(url)
    engine = make_engine(url)
    written = generate(
        engine=engine, sessions=args.sessions, calls=args.sessions * 25, end=END, messages=False
    )
    filters = Filters(start=END - timedelta(days=31), end=END + timedelta(hours=1))
    setting = replay.Setting()
    runs = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        ids = recorded_data.session_ids(engine=engine, filters=filters)
        traces = recorded_data.load_traces(engine=engine, sessions=ids)
        loaded = time.perf_counter()
        convos = [replay.conversation(t) for t in traces]
        ratio = recorded_data.summary_ratio(traces) or 0.0
        results = replay.replay(convos, setting, ratio=ratio)
        done = time.perf_counter()
        assert results is not None and len(results) == len(ids)
        runs.append((len(ids), loaded - started, done - loaded))
    sessions = runs[0][0]
    total = statistics.median(load + rest for _, load, rest in runs)
    sweep_started = time.perf_counter()
    grid = replay_sweep.sweep(convos, setting, ratio=ratio)
    sweep_s = time.perf_counter() - sweep_started
    assert grid is not None
    print(
        json.dumps(
            {
                "database": describe(url),
                "sessions": sessions,
                "calls": written["calls"],
                "sessions_per_s": round(sessions / total, 1),
                "load_s": round(statistics.median(load for _, load, _ in runs), 3),
                "rebuild_and_replay_s": round(statistics.median(r for _, _, r in runs), 3),
                "sweep_settings": len(grid),
                "sweep_s": round(sweep_s, 2),
                "sweep_session_replays_per_s": round(len(grid) * sessions / sweep_s, 1),
                "goal_sessions_per_s": 200,
            }
        )
    )
    engine.dispose()
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
