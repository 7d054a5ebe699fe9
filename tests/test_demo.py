"""Demo history: the promised shape, and it never mixes into a database silently."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy import Engine, text

from data import demo
from data.recorder import record_calls
from tests.test_recorder import call

END = datetime(2026, 11, 20, tzinfo=UTC)


def test_default_demo_has_the_promised_shape(sqlite_server_url: str) -> None:
    from data.db import make_engine

    engine = make_engine(sqlite_server_url)
    with engine.begin() as connection:
        for table in ("model_calls", "messages", "chat_sessions"):
            connection.execute(text(f"DELETE FROM {table}"))
    written = demo.generate(engine=engine, end=END)
    assert written["calls"] == 50_000 and written["sessions"] == 2_000
    assert written["users"] == 200
    with engine.connect() as connection:
        df = pd.read_sql_query(
            text(
                "SELECT ts, model, purpose, status, cost_usd, latency_ms,"
                " output_tokens FROM model_calls"
            ),
            connection,
        )
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="mixed")
    assert df["ts"].min() >= END - timedelta(days=30) - timedelta(hours=1)
    assert df["ts"].max() < END
    assert set(df["model"]) == {"gpt-4o-mini", "gpt-4.1-mini", "gpt-4o"}
    assert 20 <= (df["purpose"] == "summarize").sum() <= 5_000
    assert 0.005 <= (df["status"] == "error").mean() <= 0.03
    assert df["cost_usd"].notna().all()
    ok = df[df["status"] == "ok"]
    # Realistic shapes: latency grows with the answer and has a long tail.
    assert ok["latency_ms"].quantile(0.99) > 2 * ok["latency_ms"].median()
    assert ok[["latency_ms", "output_tokens"]].corr().iloc[0, 1] > 0.3


def test_loader_refuses_to_mix(engine: Engine, db_url: str, capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["--db", db_url, "--calls", "300", "--sessions", "30", "--users", "10", "--days", "3"]
    assert demo.main(args) == 0
    assert demo.counts(engine=engine) == (300, 0)
    assert demo.main(args) == 1
    assert "already has 300 demo calls" in capsys.readouterr().err
    assert demo.main([*args, "--replace"]) == 0
    assert demo.counts(engine=engine) == (300, 0)
    record_calls(engine=engine, calls=[call()])
    assert demo.main([*args, "--replace"]) == 1
    assert "has 1 live calls" in capsys.readouterr().err
    assert demo.main(["--db", db_url, "--remove"]) == 0
    assert demo.counts(engine=engine) == (0, 1)  # the live call is untouched
