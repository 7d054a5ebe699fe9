"""One chat turn's latency, split into model time and everything else (embedded defaults).

Prints one JSON object. `other_ms` is the turn's wall time minus the model calls' own latency:
saving the messages, the checkpointer, the agent graph, token counting and recording.

    python bench/turn.py [--turns N] [--db URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from agent.runtime import build_runtime
from data.config.settings import load_settings
from data.store.conversations import turn_stats
from data.store.db import make_engine
from data.store.migrate import upgrade

QUESTIONS = (
    "Hello, I need help with my order",
    "My order number is 10432 and it has not arrived.",
    "Can you change the delivery address?",
    "How long does a refund take?",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="acb-bench-"))
    settings = load_settings(data_dir=data_dir, database_url=args.db, metrics_port=0)
    upgrade(settings.sqlalchemy_url)
    engine = make_engine(settings.sqlalchemy_url)
    runtime = build_runtime(settings, engine=engine)
    walls: list[float] = []
    models: list[float] = []
    for i in range(args.turns):
        session = f"bench-turn-{i // len(QUESTIONS)}"
        outcome = runtime.service.run_turn(
            user_id="bench", session_id=session, message=QUESTIONS[i % len(QUESTIONS)]
        )
        stats = turn_stats(engine=engine, session_id=session)[outcome.turn]
        walls.append(outcome.wall_ms)
        models.append(stats.latency_ms)
    with engine.connect() as connection:
        ttfts = list(
            connection.execute(
                text(
                    "SELECT ttft_ms FROM model_calls WHERE ttft_ms IS NOT NULL"
                    " AND session_id LIKE 'bench-turn-%'"
                )
            )
            .scalars()
            .all()
        )
    other = [w - m for w, m in zip(walls, models, strict=True)]
    if runtime.server is not None:
        runtime.server.stop()

    def p(values: list[float], q: int) -> float:
        return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1)

    print(
        json.dumps(
            {
                "db": engine.dialect.name,
                "model": runtime.chat_spec.model,
                "turns": args.turns,
                "wall_p50_ms": p(walls, 50),
                "model_p50_ms": p(models, 50),
                "ttft_p50_ms": p(ttfts, 50),
                "other_p50_ms": p(other, 50),
                "other_p95_ms": p(other, 95),
            }
        )
    )


if __name__ == "__main__":
    main()
