"""The seed's section 4.1 query runs as written on Postgres and uses an index."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import text

from data.store.db import make_engine
from data.store.demo import generate

SEED_QUERY = (
    "SELECT * FROM conversation_metadata "
    "WHERE user_id = 'user_123' AND timestamp > NOW() - INTERVAL '7 days'"
)


def test_conversation_metadata_uses_an_index(postgres_server_url: str) -> None:
    engine = make_engine(postgres_server_url)
    with engine.begin() as connection:
        for table in ("model_calls", "messages", "chat_sessions"):
            connection.execute(text(f"DELETE FROM {table}"))
    generate(engine=engine, calls=20_000, sessions=800, users=200, seed=11, end=datetime.now(UTC))
    with engine.begin() as connection:
        # The seed's user is the demo user with the most calls in the last 7 days.
        busiest = connection.execute(
            text(
                "SELECT user_id FROM model_calls WHERE ts > NOW() - INTERVAL '7 days' "
                "GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1"
            )
        ).scalar_one()
        connection.execute(
            text("UPDATE model_calls SET user_id = 'user_123' WHERE user_id = :u"), {"u": busiest}
        )
        connection.execute(text("ANALYZE model_calls"))
        plan = "\n".join(
            r[0] for r in connection.execute(text("EXPLAIN (ANALYZE, TIMING OFF) " + SEED_QUERY))
        )
        rows = connection.execute(text(SEED_QUERY)).mappings().all()
        expected = connection.execute(
            text(
                "SELECT count(*) FROM model_calls WHERE user_id = 'user_123' "
                "AND ts > NOW() - INTERVAL '7 days'"
            )
        ).scalar_one()
    # model_calls is partitioned by month: each month's copy of ix_model_calls_user_ts is
    # named by Postgres. The months ahead hold no row yet, and an empty table is scanned as
    # such; no scan of a month with rows may be sequential.
    assert re.search(r"ix_model_calls_user_ts|model_calls_\d{4}_\d{2}_user_id_ts_idx", plan), plan
    sequential = [line for line in plan.splitlines() if "Seq Scan" in line]
    assert all(re.search(r"\(actual rows=0 loops=1\)", line) for line in sequential), plan
    assert len(rows) == expected > 0
    assert {"timestamp", "user_id", "session_id", "model", "cost_usd"} <= set(rows[0])
    engine.dispose()
