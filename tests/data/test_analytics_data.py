"""Every analyst figure against an independent pandas computation, on SQLite and Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, text

from data.analytics import context_usage, cost, latency
from data.analytics.filters import Filters
from data.store.demo import generate
from data.store.recorder import record_calls
from tests.helpers.records import call

END = datetime(2026, 11, 20, tzinfo=UTC)
WEEK = Filters(start=END - timedelta(days=7), end=END, unit="day")
# OpenAI's published gpt-4o-mini rates in USD per million tokens, independent of genai-prices.
GPT_4O_MINI = {"input": 0.15, "cached_input": 0.075, "output": 0.60}


@pytest.fixture
def data(engine: Engine) -> Engine:
    generate(engine=engine, days=10, users=40, sessions=300, calls=6_000, seed=9, end=END)
    record_calls(
        engine=engine,
        calls=[
            call(
                ts=END - timedelta(days=2),
                model="acme-llm",
                provider="openai-compatible",
                session_id="acme-1",
                user_id="acme-user",
                cost_usd=None,
                cost_status="unknown",
            ),
        ],
    )
    return engine


def calls(engine: Engine, filters: Filters = WEEK) -> pd.DataFrame:
    """The rows behind every figure, read with plain SQL; pandas does the rest."""
    with engine.connect() as connection:
        df = pd.read_sql_query(text("SELECT * FROM model_calls"), connection)
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="mixed")
    df = df[(df["ts"] >= filters.start) & (df["ts"] < filters.end)]
    if filters.models:
        df = df[df["model"].isin(filters.models)]
    if filters.user:
        df = df[df["user_id"] == filters.user]
    return df


def test_per_user_and_per_session_tables(data: Engine) -> None:
    df = calls(data)
    users = cost.cost_by_user(engine=data, filters=WEEK).set_index("user")
    expected = df.groupby("user_id").agg(
        calls=("id", "size"), cost=("cost_usd", "sum"), sessions=("session_id", "nunique")
    )
    assert len(users) == len(expected) == df["user_id"].nunique()  # every user, not a top 5
    assert (users["calls"] == expected["calls"].reindex(users.index)).all()
    assert (users["sessions"] == expected["sessions"].reindex(users.index)).all()
    assert users["cost_usd"].to_numpy() == pytest.approx(
        expected["cost"].reindex(users.index).to_numpy()
    )
    assert users["cost_usd"].is_monotonic_decreasing
    sessions = cost.cost_by_session(engine=data, filters=WEEK).set_index("session")
    per = df.groupby("session_id").agg(
        turns=("turn", "max"), tokens=("input_tokens", "sum"), out=("output_tokens", "sum")
    )
    assert len(sessions) == len(per)
    assert (sessions["turns"] == per["turns"].reindex(sessions.index)).all()
    assert (sessions["tokens"] == (per["tokens"] + per["out"]).reindex(sessions.index)).all()
    assert sessions.loc["acme-1", "unpriced_calls"] == 1


def test_totals_filters_and_previous_period(data: Engine) -> None:
    only = Filters(start=WEEK.start, end=WEEK.end, models=("gpt-4o",), user="demo-user-003")
    df = calls(data, only)
    totals = cost.cost_totals(engine=data, filters=only)
    assert totals.calls == len(df) > 0
    assert totals.sessions == df["session_id"].nunique()
    assert totals.cost_per_session == pytest.approx(
        df["cost_usd"].sum() / df["session_id"].nunique()
    )
    before = cost.cost_totals(engine=data, filters=WEEK.previous())
    assert before.calls == len(calls(data, WEEK.previous())) > 0


def test_what_if_reprices_with_the_targets_rates(data: Engine) -> None:
    df = calls(data)
    got = cost.what_if(engine=data, filters=WEEK, target_model="gpt-4o-mini").set_index("model")
    for model, rows in df.groupby("model"):
        cached = rows["cached_input_tokens"].sum()
        expected = (
            (rows["input_tokens"].sum() - cached) * GPT_4O_MINI["input"]
            + cached * GPT_4O_MINI["cached_input"]
            + rows["output_tokens"].sum() * GPT_4O_MINI["output"]
        ) / 1e6
        assert got.loc[model, "what_if_cost_usd"] == pytest.approx(expected, rel=1e-9)
        assert got.loc[model, "actual_cost_usd"] == pytest.approx(rows["cost_usd"].sum())
    # Re-pricing gpt-4o-mini traffic as gpt-4o-mini changes nothing.
    assert got.loc["gpt-4o-mini", "difference_usd"] == pytest.approx(0, abs=1e-9)


def test_unpriced_calls_are_listed(data: Engine) -> None:
    listed = cost.unpriced_calls(engine=data, filters=WEEK)
    assert list(listed["session_id"]) == ["acme-1"]


def _chat_percent(df: pd.DataFrame) -> pd.DataFrame:
    chat = df[(df["purpose"] == "chat") & (df["status"] == "ok")].copy()
    chat["pct"] = 100 * chat["context_tokens"] / chat["context_window"]
    chat["bucket"] = chat["ts"].dt.floor("D")
    return chat


def test_context_histogram_percentiles_and_share(data: Engine) -> None:
    chat = _chat_percent(calls(data))
    hist = context_usage.context_histogram(engine=data, filters=WEEK).set_index("bin")["calls"]
    bins = (np.floor(chat["pct"].clip(upper=100) / 5) * 5).astype(int).value_counts()
    assert hist.to_dict() == bins.to_dict()
    over = context_usage.context_over_time(engine=data, filters=WEEK, trigger_percent=75)
    expected = chat.groupby("bucket")["pct"].quantile([0.5, 0.95]).unstack()
    got = over.set_index("bucket")
    assert got["p50"].to_numpy() == pytest.approx(expected[0.5].to_numpy(), rel=1e-9)
    assert got["p95"].to_numpy() == pytest.approx(expected[0.95].to_numpy(), rel=1e-9)
    share = chat.assign(a=chat["pct"] >= 75).groupby("bucket")["a"].mean()
    assert got["share_above_trigger"].to_numpy() == pytest.approx(share.to_numpy())
    above, total = context_usage.share_above(engine=data, filters=WEEK, trigger_percent=75)
    assert (above, total) == ((chat["pct"] >= 75).sum(), len(chat))


def test_sessions_by_peak_and_growth(data: Engine) -> None:
    df = calls(data)
    chat = _chat_percent(df)
    ranked = context_usage.sessions_by_peak_context(engine=data, filters=WEEK)
    peaks = chat.groupby("session_id")["pct"].max().sort_values(ascending=False)
    assert ranked["peak_context_percent"].to_numpy()[:20] == pytest.approx(peaks.to_numpy()[:20])
    folded = df[df["purpose"] == "summarize"]["session_id"].value_counts()
    top = folded.index[0]
    growth = context_usage.session_growth(engine=data, session_id=top)
    assert (growth["purpose"] == "summarize").sum() >= folded.iloc[0]


def test_summarization_over_time(data: Engine) -> None:
    df = calls(data)
    summ = df[df["purpose"] == "summarize"].assign(bucket=lambda d: d["ts"].dt.floor("D"))
    got = context_usage.summarization_over_time(engine=data, filters=WEEK).set_index("bucket")
    assert got.index.is_monotonic_increasing
    expected = summ.groupby("bucket").agg(events=("id", "size"), cost=("cost_usd", "sum"))
    saved = (summ["input_tokens"] - summ["output_tokens"]).groupby(summ["bucket"]).sum()
    assert (got["events"] == expected["events"]).all() and len(got) > 0
    assert (got["tokens_saved"] == saved).all()
    assert got["cost_usd"].to_numpy() == pytest.approx(expected["cost"].to_numpy())
    ok = summ[summ["status"] == "ok"]
    p50 = ok.groupby("bucket")["latency_ms"].median()
    assert got["latency_p50_ms"].to_numpy() == pytest.approx(p50.to_numpy())


@pytest.mark.parametrize(
    ("metric", "column", "purpose"),
    [
        ("model", "latency_ms", "chat"),
        ("ttft", "ttft_ms", "chat"),
        ("summarization", "latency_ms", "summarize"),
    ],
)
def test_latency_percentiles(data: Engine, metric: str, column: str, purpose: str) -> None:
    df = calls(data)
    ok = df[(df["status"] == "ok") & (df["purpose"] == purpose)].dropna(subset=[column])
    ok = ok.assign(bucket=ok["ts"].dt.floor("D"))
    got = latency.latency_over_time(engine=data, filters=WEEK, metric=metric)
    expected = ok.groupby(["bucket", "model"])[column].quantile([0.5, 0.95, 0.99]).unstack()
    got = got.set_index(["bucket", "model"]).sort_index()
    assert len(got) == len(expected) > 0
    for q, label in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        assert got[label].to_numpy() == pytest.approx(expected[q].to_numpy(), rel=1e-9)
    # Whole-range percentiles come from raw rows, for ranges up to 3 days.
    assert latency.latency_summary(engine=data, filters=WEEK, metric=metric) is None
    days = Filters(start=END - timedelta(days=3), end=END, unit="hour")
    summary = latency.latency_summary(engine=data, filters=days, metric=metric)
    assert summary is not None
    recent = ok[ok["ts"] >= days.start]
    assert summary.set_index("model")["p99"].to_numpy() == pytest.approx(
        recent.groupby("model")[column].quantile(0.99).to_numpy(), rel=1e-9
    )


def test_error_rate_and_slowest_calls(data: Engine) -> None:
    df = calls(data).assign(bucket=lambda d: d["ts"].dt.floor("D"))
    got = latency.error_rate_over_time(engine=data, filters=WEEK).set_index(["bucket", "model"])
    expected = df.groupby(["bucket", "model"])["status"].apply(
        lambda s: 100 * (s == "error").mean()
    )
    assert got["error_rate"].to_numpy() == pytest.approx(expected.to_numpy())
    slow = latency.slowest_calls(engine=data, filters=WEEK, limit=10)
    assert slow["latency_ms"].to_numpy() == pytest.approx(df["latency_ms"].nlargest(10).to_numpy())


def test_memory_recall_and_tool_call_percentiles(engine: Engine) -> None:
    from prometheus_client import REGISTRY

    from data.store.recorder import record_event
    from data.store.records import EventRecord

    rng = np.random.default_rng(3)
    before = REGISTRY.get_sample_value("memory_retrieval_latency_seconds_count") or 0
    rows = []
    for i in range(400):
        kind, name = [
            ("memory_recall", "memory"),
            ("tool_call", "order_lookup"),
            ("tool_call", "search_faq"),
        ][i % 3]
        event = EventRecord(
            user_id=f"u{i % 7}",
            session_id=f"s{i % 40}",
            turn=i % 5,
            kind=kind,
            name=name,
            latency_ms=float(rng.lognormal(3, 0.7)),
            ts=END - timedelta(hours=int(i % 70)),
            status="error" if i % 37 == 0 else "ok",
            hits=int(i % 5) if kind == "memory_recall" else None,
        )
        record_event(engine=engine, event=event)
        rows.append(event)
    assert (
        REGISTRY.get_sample_value("memory_retrieval_latency_seconds_count") or 0
    ) - before == sum(e.kind == "memory_recall" for e in rows)
    df = pd.DataFrame([e.as_row() for e in rows])
    hours = Filters(start=END - timedelta(days=3), end=END, unit="hour")
    in_range = (df["ts"] >= hours.start) & (df["ts"] < hours.end)  # END itself is excluded
    df = df[(df["status"] == "ok") & in_range].assign(bucket=lambda d: d["ts"].dt.floor("h"))
    for metric, kind in (("memory", "memory_recall"), ("tool", "tool_call")):
        got = latency.latency_over_time(engine=engine, filters=hours, metric=metric)
        part = df[df["kind"] == kind]
        expected = part.groupby(["bucket", "name"])["latency_ms"].quantile([0.5, 0.99]).unstack()
        got = got.set_index(["bucket", "model"]).sort_index()
        assert len(got) == len(expected) > 0
        assert got["p99"].to_numpy() == pytest.approx(expected[0.99].to_numpy(), rel=1e-9)
        summary = latency.latency_summary(engine=engine, filters=hours, metric=metric)
        assert summary is not None
        assert summary.set_index("model")["p50"].to_numpy() == pytest.approx(
            part.groupby("name")["latency_ms"].median().to_numpy(), rel=1e-9
        )
    with pytest.raises(ValueError, match="unknown event kind"):
        record_event(
            engine=engine,
            event=EventRecord(
                user_id="u", session_id="s", turn=1, kind="nap", name="x", latency_ms=1.0
            ),
        )
