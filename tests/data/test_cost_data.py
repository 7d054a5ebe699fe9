"""Cost figures against independent plain-SQL and pandas computations, on SQLite and Postgres."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import Engine, text

from data.analytics.cost import (
    cost_by_model,
    cost_over_time,
    cost_totals,
    has_calls,
    page_data,
    reprice,
    what_if,
)
from data.analytics.filters import Filters
from data.store.demo import generate
from data.store.recorder import record_calls
from tests.helpers.records import call

END = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture
def demo_engine(engine: Engine) -> Engine:
    generate(engine=engine, days=10, users=30, sessions=200, calls=4_000, seed=3, end=END)
    # Calls at the window edges: one exactly at start (in), one exactly at end (out).
    edge = {
        "session_id": "edge",
        "provider": "openai-compatible",
        "model": "acme-llm",
        "cost_usd": None,
        "cost_status": "unknown",
    }
    record_calls(
        engine=engine, calls=[call(ts=END - timedelta(days=7), **edge), call(ts=END, **edge)]
    )
    return engine


def frame(engine: Engine) -> pd.DataFrame:
    """Every call row through plain SQL, then pandas does the arithmetic."""
    with engine.connect() as connection:
        df = pd.read_sql_query(text("SELECT * FROM model_calls"), connection)
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="mixed")
    return df


def window(df: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    return df[(df["ts"] >= start) & (df["ts"] < end)]


def test_totals_match_plain_sql(demo_engine: Engine) -> None:
    start, end = END - timedelta(days=7), END
    got = cost_totals(engine=demo_engine, filters=Filters(start=start, end=end))
    with demo_engine.connect() as connection:
        expected = connection.execute(
            text(
                "SELECT count(*), sum(input_tokens), sum(cached_input_tokens), sum(output_tokens),"
                " sum(cost_usd), sum(CASE WHEN cost_status = 'unknown' THEN 1 ELSE 0 END),"
                " sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END)"
                " FROM model_calls WHERE ts >= :start AND ts < :end"
            ),
            {
                "start": start.replace(tzinfo=None)
                if demo_engine.dialect.name == "sqlite"
                else start,
                "end": end.replace(tzinfo=None) if demo_engine.dialect.name == "sqlite" else end,
            },
        ).one()
    assert got.calls == expected[0] > 1000
    assert (got.input_tokens, got.cached_input_tokens, got.output_tokens) == tuple(expected[1:4])
    assert got.cost_usd == pytest.approx(float(expected[4]), rel=1e-9)
    assert (
        got.unpriced_calls == expected[5] == 1
    )  # the edge call at `start`; the one at `end` is out
    assert got.errors == expected[6]


def test_per_day_per_model_matches_pandas(demo_engine: Engine) -> None:
    start, end = END - timedelta(days=10), END
    got = cost_over_time(engine=demo_engine, filters=Filters(start=start, end=end, unit="day"))
    df = window(frame(demo_engine), start, end).copy()
    df["bucket"] = df["ts"].dt.floor("D")
    expected = (
        df.groupby(["bucket", "model"])
        .agg(
            calls=("id", "size"),
            cost_usd=("cost_usd", "sum"),
            input_tokens=("input_tokens", "sum"),
            output_tokens=("output_tokens", "sum"),
        )
        .reset_index()
    )
    merged = got.merge(
        expected, on=["bucket", "model"], suffixes=("", "_exp"), how="outer", indicator=True
    )
    assert (merged["_merge"] == "both").all()
    assert (merged["calls"] == merged["calls_exp"]).all()
    assert (merged["tokens"] == merged["input_tokens_exp"] + merged["output_tokens_exp"]).all()
    assert merged["cost_usd"].to_numpy() == pytest.approx(merged["cost_usd_exp"].to_numpy())
    assert len(got["bucket"].unique()) == 10


def test_per_model_table_matches_pandas(demo_engine: Engine) -> None:
    start, end = END - timedelta(days=7), END
    got = cost_by_model(engine=demo_engine, filters=Filters(start=start, end=end)).set_index(
        "model"
    )
    df = window(frame(demo_engine), start, end)
    for model, rows in df.groupby("model"):
        assert got.loc[model, "calls"] == len(rows)
        assert got.loc[model, "cached_input_tokens"] == rows["cached_input_tokens"].sum()
        assert got.loc[model, "cost_usd"] == pytest.approx(rows["cost_usd"].sum())
        assert got.loc[model, "unpriced_calls"] == (rows["cost_status"] == "unknown").sum()
        assert got.loc[model, "errors"] == (rows["status"] == "error").sum()
    assert set(got.index) == {"gpt-4o-mini", "gpt-4.1-mini", "gpt-4o", "acme-llm"}
    assert got["cost_usd"].is_monotonic_decreasing


@pytest.mark.parametrize(
    "changes",
    [
        {},  # the rollups
        {"models": ("gpt-4o", "acme-llm")},
        {"user": "u1"},  # raw rows: the edge calls' user
        {"start": END - timedelta(days=30), "end": END - timedelta(days=20)},  # nothing
    ],
    ids=["rollups", "models", "user", "empty"],
)
def test_page_data_is_the_figures_of_each_function(
    demo_engine: Engine, changes: dict[str, object]
) -> None:
    """The cost page's concurrent read gives exactly what each figure's own function gives
    (the exports and the other tests use those), and its conversation and user counts, taken
    from the per-session table, equal plain SQL."""
    filters = replace(Filters(start=END - timedelta(days=7), end=END), **changes)
    page = page_data(engine=demo_engine, filters=filters)
    assert page.totals == cost_totals(engine=demo_engine, filters=filters)
    assert page.previous == cost_totals(engine=demo_engine, filters=filters.previous())
    for got, function in [
        (page.over_time, cost_over_time),
        (page.by_model, cost_by_model),
    ]:
        pd.testing.assert_frame_equal(got, function(engine=demo_engine, filters=filters))
    pd.testing.assert_frame_equal(
        reprice(page.by_model, target_model="gpt-4o-mini"),
        what_if(engine=demo_engine, filters=filters, target_model="gpt-4o-mini"),
    )
    df = window(frame(demo_engine), filters.start, filters.end)
    if filters.models:
        df = df[df["model"].isin(filters.models)]
    if filters.user:
        df = df[df["user_id"] == filters.user]
    assert (page.totals.sessions, page.totals.users) == (
        df["session_id"].nunique(),
        df["user_id"].nunique(),
    )
    assert (page.totals.calls > 0) == ("start" not in changes)


def test_empty_range_and_empty_database(engine: Engine) -> None:
    assert not has_calls(engine=engine)
    totals = cost_totals(engine=engine, filters=Filters(start=END - timedelta(days=1), end=END))
    assert (totals.calls, totals.cost_usd, totals.unpriced_calls) == (0, 0.0, 0)
    assert cost_over_time(
        engine=engine, filters=Filters(start=END - timedelta(days=1), end=END)
    ).empty
    table = cost_by_model(engine=engine, filters=Filters(start=END - timedelta(days=1), end=END))
    assert table.empty and "cost_usd" in table.columns
