"""Rollups stay exact when calls arrive late, are corrected or are deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import Engine, select, text, update

from data.analytics import context_usage, cost, latency, rollups
from data.analytics.filters import Filters
from data.analytics.rollups import refresh, refresh_hours, warm
from data.store.db import make_engine
from data.store.demo import generate
from data.store.orm import ModelCall
from data.store.orm_rollups import RollupHourly
from data.store.recorder import record_calls
from tests.helpers.records import call

END = datetime(2026, 11, 20, tzinfo=UTC)
WEEK = Filters(start=END - timedelta(days=7), end=END, unit="day")
HOURS = Filters(start=END - timedelta(days=2), end=END, unit="hour")


def raw(engine: Engine, sql: str, **params: object) -> tuple:  # type: ignore[type-arg]
    with engine.connect() as connection:
        return tuple(connection.execute(text(sql), params).one())


def window(engine: Engine, filters: Filters) -> dict[str, object]:
    def ts(value: datetime) -> object:
        return value.replace(tzinfo=None) if engine.dialect.name == "sqlite" else value

    return {"a": ts(filters.start), "b": ts(filters.end)}


def check_exact(engine: Engine, filters: Filters = WEEK) -> None:
    """The rollup-backed figures equal plain SQL over the raw rows."""
    calls, tokens, cost_usd, errors, sessions = raw(
        engine,
        "SELECT count(*), coalesce(sum(input_tokens + output_tokens), 0), "
        "coalesce(sum(cost_usd), 0), coalesce(sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END),"
        " 0), count(DISTINCT session_id) FROM model_calls WHERE ts >= :a AND ts < :b",
        **window(engine, filters),
    )
    totals = cost.cost_totals(engine=engine, filters=filters)
    assert (totals.calls, totals.tokens, totals.errors, totals.sessions) == (
        calls,
        tokens,
        errors,
        sessions,
    )
    assert totals.cost_usd == pytest.approx(float(cost_usd), rel=1e-9, abs=1e-12)
    by_session = cost.cost_by_session(engine=engine, filters=filters)
    assert int(by_session["calls"].sum()) == calls
    rates = latency.error_rate_over_time(engine=engine, filters=filters)
    assert int(rates["errors"].sum()) == errors
    p99 = latency.latency_over_time(engine=engine, filters=filters, metric="model")
    assert (
        int(p99["calls"].sum())
        == raw(
            engine,
            "SELECT count(*) FROM model_calls WHERE ts >= :a AND ts < :b AND purpose = "
            "'chat' AND status = 'ok'",
            **window(engine, filters),
        )[0]
    )


@pytest.fixture
def history(engine: Engine) -> Engine:
    generate(
        engine=engine, days=9, users=20, sessions=150, calls=2_500, seed=21, end=END, messages=False
    )
    refresh(engine)
    return engine


def test_late_calls_correction_and_deletion_stay_exact(history: Engine) -> None:
    check_exact(history)
    check_exact(history, HOURS)
    # A call that arrives late, into an hour that was already rolled up.
    late = END - timedelta(days=3, hours=5, minutes=17)
    record_calls(
        engine=history,
        calls=[call(ts=late, session_id="late-1", latency_ms=99_000.0, cost_usd=1.25)],
    )
    check_exact(history)
    slow = latency.slowest_calls(engine=history, filters=WEEK, limit=1)
    assert slow["session_id"].iloc[0] == "late-1"
    # A corrected cost, and a call moved to another hour.
    with history.begin() as connection:
        connection.execute(
            text("UPDATE model_calls SET cost_usd = cost_usd * 2 WHERE model = 'gpt-4o'")
        )
        # Through the typed table, as the app writes: SQLite keeps one timestamp format.
        connection.execute(
            update(ModelCall)
            .where(ModelCall.session_id == "late-1")
            .values(ts=END - timedelta(hours=30))
        )
    check_exact(history)
    check_exact(history, HOURS)
    # A deleted session.
    with history.begin() as connection:
        connection.execute(text("DELETE FROM model_calls WHERE session_id = 'late-1'"))
    check_exact(history)
    assert "late-1" not in set(cost.cost_by_session(engine=history, filters=WEEK)["session"])


def test_rollup_and_raw_paths_agree(history: Engine) -> None:
    """The same figure through the rollup (no user filter) and through raw rows (a user
    filter that matches every call) is identical."""
    with history.begin() as connection:
        connection.execute(text("UPDATE model_calls SET user_id = 'everyone'"))
    everyone = Filters(start=WEEK.start, end=WEEK.end, unit="day", user="everyone")
    for name in ("cost_by_model", "cost_over_time"):
        a = getattr(cost, name)(engine=history, filters=WEEK)
        b = getattr(cost, name)(engine=history, filters=everyone)
        assert a["calls"].tolist() == b["calls"].tolist()
        assert a["cost_usd"].to_numpy() == pytest.approx(b["cost_usd"].to_numpy())
    for metric in ("model", "ttft", "summarization"):
        a = latency.latency_over_time(engine=history, filters=WEEK, metric=metric)
        b = latency.latency_over_time(engine=history, filters=everyone, metric=metric)
        assert a["calls"].tolist() == b["calls"].tolist()
        assert a["p99"].to_numpy() == pytest.approx(b["p99"].to_numpy(), rel=1e-9)
    a = context_usage.context_over_time(engine=history, filters=WEEK, trigger_percent=75)
    b = context_usage.context_over_time(engine=history, filters=everyone, trigger_percent=75)
    assert a["p95"].to_numpy() == pytest.approx(b["p95"].to_numpy(), rel=1e-9)
    assert a["share_above_trigger"].to_numpy() == pytest.approx(b["share_above_trigger"].to_numpy())
    assert context_usage.share_above(
        engine=history, filters=WEEK, trigger_percent=75
    ) == context_usage.share_above(engine=history, filters=everyone, trigger_percent=75)
    a = context_usage.sessions_by_peak_context(engine=history, filters=WEEK)
    b = context_usage.sessions_by_peak_context(engine=history, filters=everyone)
    assert a["session"].tolist()[:50] == b["session"].tolist()[:50]


ROLLUP_TABLES = (*rollups.TABLES, "rollup_dirty", "rollup_dirty_days", "rollup_dirty_sessions")


def _tables(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as connection:
        return {
            name: sorted(
                (tuple(r) for r in connection.execute(text(f"SELECT * FROM {name}"))), key=repr
            )
            for name in ROLLUP_TABLES
        }


def test_warming_the_refresh_changes_nothing_and_leaves_little_to_compile(
    history: Engine, db_url: str
) -> None:
    # A call waits for its refresh: warming neither takes it nor writes anything.
    record_calls(engine=history, calls=[call(ts=WEEK.end - timedelta(hours=5), session_id="w")])
    before = _tables(history)
    fresh = make_engine(db_url)  # a new process's engine: nothing compiled yet
    try:
        warm(fresh)
        assert _tables(fresh) == before
        compiled = len(fresh._compiled_cache)  # SQLAlchemy's cache of compiled statements
        assert refresh_hours(fresh) == 1
        # What an empty hour does not run: taking the dirty hours, and writing percentiles
        # (and, on SQLite, the sessions' p95) for calls that exist.
        assert len(fresh._compiled_cache) - compiled <= 3
    finally:
        fresh.dispose()
    check_exact(history)


def _rollups(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every rollup table's rows (floats rounded: a sum's last bits follow the row order)."""

    def clean(value: object) -> object:
        return round(value, 9) if isinstance(value, float) else value

    with engine.connect() as connection:
        return {
            name: sorted(
                (
                    tuple(clean(v) for v in row)
                    for row in connection.execute(text(f"SELECT * FROM {name}"))
                ),
                key=repr,
            )
            for name in rollups.TABLES
        }


def test_the_narrow_refresh_equals_a_whole_recompute(
    history: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After each kind of write, refresh_hours recomputes only the sessions the write touched
    in its hours (the narrow path), and every rollup row equals recomputing every hour from
    the raw rows."""
    narrow: list[tuple[datetime, list[str]]] = []
    original = rollups._narrow

    def spy(connection, hour, sessions):  # type: ignore[no-untyped-def]
        narrow.append((hour, sorted(sessions)))
        return original(connection, hour, sessions)

    monkeypatch.setattr(rollups, "_narrow", spy)
    with history.connect() as connection:
        session, user = connection.execute(
            text("SELECT session_id, user_id FROM model_calls ORDER BY id LIMIT 1")
        ).one()
    busy = END - timedelta(days=2, hours=3)

    def run(statement: object, **params: object) -> None:
        with history.begin() as connection:
            connection.execute(statement, params)  # type: ignore[call-overload]

    writes = [
        # A chat turn in a session that has calls, and a new session in the same hour.
        lambda: record_calls(
            engine=history,
            calls=[
                call(ts=busy, session_id=session, user_id=user, model="gpt-4o", cost_usd=0.5),
                call(ts=busy + timedelta(minutes=3), session_id="narrow-new", user_id="u-new"),
            ],
        ),
        # A corrected cost and status on one call.
        lambda: run(
            text(
                "UPDATE model_calls SET cost_usd = 2.5, status = 'error' WHERE id = "
                "(SELECT min(id) FROM model_calls WHERE session_id = :s)"
            ),
            s=session,
        ),
        # A call moved to another model, another session and user, and another hour.
        lambda: run(
            update(ModelCall)
            .where(ModelCall.session_id == "narrow-new")
            .values(
                model="gpt-4.1-mini",
                session_id="narrow-moved",
                user_id="u-moved",
                ts=busy - timedelta(hours=7),
            )
        ),
        # A model's only call in a session-hour deleted: that model's rows must go.
        lambda: run(text("DELETE FROM model_calls WHERE session_id = 'narrow-moved'")),
    ]
    for write in writes:
        write()
        narrow.clear()
        assert refresh_hours(history) >= 1
        assert narrow, "the write's hours took the narrow path"
        assert all(len(sessions) <= 2 for _, sessions in narrow)
        rollups.settle_days(history)  # (the day percentiles, which settle in the background)
        got = _rollups(history)
        check_exact(history)
        check_exact(history, HOURS)
        # Recompute every hour whole, from the raw rows, and compare every rollup row.
        with history.begin() as connection:
            hours = list(connection.execute(select(RollupHourly.hour).distinct()).scalars())
            rollups._recompute(connection, hours, {})
        rollups.settle_days(history)
        again = _rollups(history)
        for name in got:
            assert sorted(set(again[name]) ^ set(got[name]), key=repr) == [], name


def test_a_bulk_write_takes_the_whole_hour(history: Engine) -> None:
    """More sessions in an hour than NARROW_SESSIONS: the hour is recomputed whole and its
    listed sessions leave the queue with it."""
    hour = END - timedelta(days=1, hours=4)
    record_calls(
        engine=history,
        calls=[
            call(ts=hour + timedelta(seconds=i), session_id=f"bulk-{i}", user_id=f"bulk-{i % 7}")
            for i in range(rollups.NARROW_SESSIONS + 1)
        ],
    )
    with history.connect() as connection:
        listed = connection.execute(text("SELECT count(*) FROM rollup_dirty_sessions")).scalar()
    assert listed == rollups.NARROW_SESSIONS + 1
    assert refresh_hours(history) == 1
    with history.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM rollup_dirty_sessions")).scalar() == 0
    check_exact(history)
    check_exact(history, HOURS)


def test_a_queued_hours_percentiles_are_read_from_the_raw_rows(
    history: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A narrow refresh queues its hour's percentiles for the background settle. A view read
    before the settle computes that hour from the raw rows (the new call counted); after it,
    the stored percentiles are the same figures."""
    from data.analytics import freshness

    monkeypatch.setattr(freshness, "_settle_in_background", lambda engine: None)
    columns = ["bucket", "model", "calls", "p50", "p95", "p99"]

    def view() -> pd.DataFrame:
        frame = latency.latency_over_time(engine=history, filters=HOURS, metric="model")
        return frame[columns].sort_values(["bucket", "model"], ignore_index=True)

    before = view()
    busiest = before.sort_values("calls").iloc[-1]  # the hour and model with the most calls
    hour, model = busiest["bucket"].to_pydatetime(), busiest["model"]
    record_calls(
        engine=history,
        calls=[
            call(
                ts=hour + timedelta(minutes=10),
                session_id="slow-1",
                model=model,
                latency_ms=250_000.0,
            )
        ],
    )
    queued = view()
    assert rollups.dirty_percentile_hours(history, HOURS.start, HOURS.end) == [hour]
    rollups.settle_days(history)
    assert rollups.dirty_percentile_hours(history, HOURS.start, HOURS.end) == []
    settled = view()
    pd.testing.assert_frame_equal(queued, settled, check_dtype=False)
    # The queued read counted the new call: one more, and a higher p99.
    row = queued[(queued["bucket"] == busiest["bucket"]) & (queued["model"] == model)].iloc[0]
    assert int(row["calls"]) == int(busiest["calls"]) + 1
    assert float(row["p99"]) > float(busiest["p99"])
