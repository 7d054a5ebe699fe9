"""The per-session and per-user tables (data.analytics.sessions) against pandas over the raw rows,
on SQLite and Postgres: every range, filter, sort and page, straddling sessions, late inserts,
corrections and deletes, the CSV export, and the day percentiles that settle later."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, select, text, update

from data.analytics import latency, session_sql, sessions
from data.analytics.filters import Filters
from data.analytics.rollups import refresh, refresh_hours, settle_days
from data.store.db import make_engine
from data.store.demo import generate
from data.store.migrate import upgrade
from data.store.orm import ModelCall
from data.store.orm_rollups import RollupDirtyDays
from data.store.recorder import record_calls
from tests.helpers.db import fresh_postgres
from tests.helpers.records import call

END = datetime(2026, 11, 20, tzinfo=UTC)
WEEK = Filters(start=END - timedelta(days=7), end=END, unit="day")


def build_history(engine: Engine) -> Engine:
    """3,000 calls over nine days, a session that straddles the week's start, one across its
    end, and an unpriced one; rollups refreshed."""
    generate(
        engine=engine, days=9, users=25, sessions=200, calls=3_000, seed=5, end=END, messages=False
    )
    # A session that straddles the week's start, one across the end, and an unpriced one.
    record_calls(
        engine=engine,
        calls=[
            call(ts=WEEK.start - timedelta(hours=2), session_id="edge-a", user_id="edge"),
            call(ts=WEEK.start + timedelta(hours=1), session_id="edge-a", user_id="edge", turn=2),
            call(ts=END - timedelta(minutes=5), session_id="edge-b", user_id="edge"),
            call(ts=END + timedelta(hours=1), session_id="edge-b", user_id="edge", turn=2),
            call(
                ts=END - timedelta(days=2),
                session_id="acme-1",
                user_id="acme",
                model="acme-llm",
                cost_usd=None,
                cost_status="unknown",
            ),
        ],
    )
    refresh(engine)
    return engine


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def history(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """The history, built once per database for this module's read-only tests (in a
    database of its own: other tests empty the shared ones)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('history') / 'history.sqlite3'}"
        upgrade(url)
        where: AbstractContextManager[str] = nullcontext(url)
    else:
        where = fresh_postgres("acb_history")
    with where as url:
        engine = make_engine(url)
        yield build_history(engine)
        engine.dispose()


@pytest.fixture
def own_history(engine: Engine) -> Engine:
    """The same history for a test that writes to it."""
    return build_history(engine)


def raw(engine: Engine, filters: Filters) -> pd.DataFrame:
    with engine.connect() as connection:
        df = pd.read_sql_query(text("SELECT * FROM model_calls"), connection)
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="mixed")
    df = df[(df["ts"] >= filters.start) & (df["ts"] < filters.end)]
    if filters.models:
        df = df[df["model"].isin(filters.models)]
    if filters.user:
        df = df[df["user_id"] == filters.user]
    if filters.session:
        df = df[df["session_id"] == filters.session]
    return df


def expected_sessions(df: pd.DataFrame) -> pd.DataFrame:
    chat_ok = (df["purpose"] == "chat") & (df["status"] == "ok")
    df = df.assign(
        tokens=df["input_tokens"] + df["output_tokens"],
        unpriced=(df["cost_status"] == "unknown").astype(int),
        summarize=(df["purpose"] == "summarize").astype(int),
        chat=(df["purpose"] == "chat").astype(int),
        pct=(100.0 * df["context_tokens"] / df["context_window"]).where(chat_ok),
        lat=df["latency_ms"].where(chat_ok),
    )
    return df.groupby("session_id").agg(
        user=("user_id", "min"),
        first_call=("ts", "min"),
        last_call=("ts", "max"),
        turns=("turn", "max"),
        calls=("id", "size"),
        chat_calls=("chat", "sum"),
        tokens=("tokens", "sum"),
        cost_usd=("cost_usd", "sum"),
        unpriced_calls=("unpriced", "sum"),
        summarizations=("summarize", "sum"),
        peak_context_percent=("pct", "max"),
        latency_p95_ms=(
            "lat",
            lambda s: np.percentile(s.dropna(), 95) if s.notna().any() else np.nan,
        ),
    )


def assert_sessions(engine: Engine, filters: Filters) -> None:
    got = sessions.all_sessions(engine=engine, filters=filters)
    got = sessions.fill_partial_latency(engine, got, filters).set_index("session")
    want = expected_sessions(raw(engine, filters))
    assert sorted(got.index) == sorted(want.index)
    want = want.reindex(got.index)
    for column in (
        "user",
        "turns",
        "calls",
        "chat_calls",
        "tokens",
        "unpriced_calls",
        "summarizations",
    ):
        assert got[column].tolist() == want[column].tolist(), column
    for column in ("first_call", "last_call"):
        assert (got[column] == want[column]).all(), column
    for column in ("cost_usd", "peak_context_percent"):
        assert got[column].to_numpy(dtype=float) == pytest.approx(
            want[column].to_numpy(dtype=float), rel=1e-9, nan_ok=True
        ), column
    if len(filters.models) < 2:  # a p95 over several models' calls is not stored
        assert got["latency_p95_ms"].to_numpy(dtype=float) == pytest.approx(
            want["latency_p95_ms"].to_numpy(dtype=float), rel=1e-9, nan_ok=True
        )
    assert sessions.count_sessions(engine=engine, filters=filters) == len(want)
    users = sessions.all_users(engine=engine, filters=filters).set_index("user")
    df = raw(engine, filters)
    per_user = df.groupby("user_id").agg(
        sessions=("session_id", "nunique"), calls=("id", "size"), cost=("cost_usd", "sum")
    )
    assert sorted(users.index) == sorted(per_user.index)
    per_user = per_user.reindex(users.index)
    assert users["sessions"].tolist() == per_user["sessions"].tolist()
    assert users["calls"].tolist() == per_user["calls"].tolist()
    assert users["cost_usd"].to_numpy() == pytest.approx(per_user["cost"].to_numpy(), rel=1e-9)
    assert sessions.count_users(engine=engine, filters=filters) == len(per_user)


VIEWS = {
    "week": WEEK,
    "hours": Filters(start=END - timedelta(hours=30), end=END - timedelta(hours=3), unit="hour"),
    "one model": replace(WEEK, models=("gpt-4o",)),
    "two models": replace(WEEK, models=("gpt-4o-mini", "acme-llm")),
    "user": replace(WEEK, user="edge"),
    "session": replace(WEEK, session="edge-a"),
    "empty": Filters(start=END - timedelta(days=40), end=END - timedelta(days=30)),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_tables_equal_pandas(history: Engine, view: str) -> None:
    assert_sessions(history, VIEWS[view])


@pytest.mark.parametrize("many", [2000, 0], ids=["probed", "distinct hourly"])
@pytest.mark.parametrize("view", ["week", "hours", "one model", "user", "empty"])
def test_user_counts_agree_with_pandas(
    history: Engine, view: str, many: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted as the overlapping users less the gaps, or (more than MANY_STRADDLING users
    spanning the range; forced here, the history is too small) as the range's hourly rollup
    rows distinct by user."""
    monkeypatch.setattr(sessions, "MANY_STRADDLING", many)
    filters = VIEWS[view]
    per_user = raw(history, filters).groupby("user_id").size()
    assert sessions.count_users(engine=history, filters=filters) == len(per_user)
    assert sessions.count_users(engine=history, filters=filters, search="e") == sum(
        "e" in user.lower() for user in per_user.index
    )


def test_a_user_with_calls_before_and_after_a_range_but_none_in_it_is_not_counted(
    own_history: Engine,
) -> None:
    """count_users subtracts the users whose span covers the range without a call in it."""
    middle = Filters(start=END - timedelta(days=4), end=END - timedelta(days=3), unit="hour")
    record_calls(
        engine=own_history,
        calls=[
            call(ts=middle.start - timedelta(days=1), session_id="gap-1", user_id="gap"),
            call(ts=middle.end + timedelta(hours=2), session_id="gap-2", user_id="gap"),
            call(ts=middle.start - timedelta(days=1), session_id="span-1", user_id="span"),
            call(ts=middle.start + timedelta(minutes=5), session_id="span-2", user_id="span"),
            call(ts=middle.end + timedelta(hours=2), session_id="span-3", user_id="span"),
        ],
    )
    refresh(own_history)
    for filters in (middle, replace(middle, models=("gpt-4o-mini",))):
        users = set(raw(own_history, filters)["user_id"])
        assert "span" in users and "gap" not in users
        assert sessions.count_users(engine=own_history, filters=filters) == len(users)
        assert sessions.count_users(engine=own_history, filters=filters, search="span") == 1
        assert sessions.count_users(engine=own_history, filters=filters, search="gap") == 0


def test_straddling_sessions_count_only_their_calls_in_range(history: Engine) -> None:
    page = sessions.all_sessions(engine=history, filters=WEEK).set_index("session")
    assert page.loc["edge-a", "calls"] == 1 and page.loc["edge-a", "partial"]
    assert page.loc["edge-b", "calls"] == 1 and page.loc["edge-b", "partial"]
    assert page.loc["acme-1", "unpriced_calls"] == 1


@pytest.mark.parametrize("sort", sessions.SESSION_SORTS)
def test_pages_are_slices_of_the_sorted_table(history: Engine, sort: str) -> None:
    whole = sessions.all_sessions(engine=history, filters=WEEK)
    for descending in (True, False):
        pages = [
            sessions.session_page(
                engine=history, filters=WEEK, sort=sort, descending=descending, offset=o, limit=70
            )
            for o in range(0, len(whole) + 70, 70)
        ]
        rows = pd.concat([p.rows for p in pages], ignore_index=True)
        assert {p.total for p in pages} == {len(whole)}
        assert sorted(rows["session"]) == sorted(whole["session"])  # every row once
        values = rows[sort].tolist()
        present = [v for v in values if not pd.isna(v)]
        assert present == sorted(present, reverse=descending)
        assert all(pd.isna(v) for v in values[len(present) :])  # NULLs last


@pytest.mark.parametrize("many", [2000, 0], ids=["listed", "one pass"])
@pytest.mark.parametrize("view", ["week", "hours", "one model", "user", "empty"])
def test_user_pages_are_slices_of_the_table_pandas_sorts(
    history: Engine, view: str, many: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every page of every sort, small enough that a page's first rows leave straddling users
    out (user_page sums only those that can reach the page), against pandas' whole table; with
    the straddling users listed, or (more than MANY_STRADDLING, forced here) summed in one pass
    over the range's sessions."""
    monkeypatch.setattr(sessions, "MANY_STRADDLING", many)
    filters = VIEWS[view]
    df = raw(history, filters).assign(
        tokens=lambda d: d["input_tokens"] + d["output_tokens"],
        unpriced=lambda d: (d["cost_status"] == "unknown").astype(int),
    )
    want = (
        df.groupby("user_id")
        .agg(
            sessions=("session_id", "nunique"),
            calls=("id", "size"),
            tokens=("tokens", "sum"),
            cost_usd=("cost_usd", "sum"),
            unpriced_calls=("unpriced", "sum"),
        )
        .rename_axis("user")
        .reset_index()
    )
    size = 3
    for sort in sessions.USER_SORTS:
        for descending in (True, False):
            pages = [
                sessions.user_page(
                    engine=history,
                    filters=filters,
                    sort=sort,
                    descending=descending,
                    offset=o,
                    limit=size,
                )
                for o in range(0, len(want) + size, size)
            ]
            rows = pd.concat([p.rows for p in pages], ignore_index=True)
            assert {p.total for p in pages} == {len(want)}
            assert sorted(rows["user"]) == sorted(want["user"])  # every user once
            if sort == "cost_usd":  # float sums: the order of the values, not of the ties
                got = rows["cost_usd"].to_numpy(dtype=float)
                assert got == pytest.approx(
                    want.sort_values("cost_usd", ascending=not descending)["cost_usd"].to_numpy(
                        dtype=float
                    ),
                    rel=1e-9,
                ), descending
                continue
            keys = ["user"] if sort == "user" else [sort, "user"]
            ordered = want.sort_values(keys, ascending=not descending)
            assert rows["user"].tolist() == ordered["user"].tolist(), (sort, descending)
            assert rows[sort].tolist() == ordered[sort].tolist(), (sort, descending)


def test_user_pages_and_search(history: Engine) -> None:
    whole = sessions.all_users(engine=history, filters=WEEK)
    page = sessions.user_page(engine=history, filters=WEEK, sort="calls", descending=False)
    assert page.total == len(whole)
    assert page.rows["calls"].tolist() == sorted(whole["calls"])[:50]
    found = sessions.session_page(engine=history, filters=WEEK, search="EDGE")
    assert set(found.rows["session"]) == {"edge-a", "edge-b"} and found.total == 2
    acm = sessions.user_page(engine=history, filters=WEEK, search="acm")
    assert acm.rows["user"].tolist() == ["acme"] and acm.total == 1
    for typed in ("a", "user", "zz-none"):  # the count agrees with the rows, whatever matches
        wanted = whole[whole["user"].str.contains(typed, case=False, regex=False)]
        assert sessions.count_users(engine=history, filters=WEEK, search=typed) == len(wanted)
    # A % in the search is a character, not a wildcard.
    assert sessions.session_page(engine=history, filters=WEEK, search="%").total == 0
    with pytest.raises(sessions.TableInputError):
        sessions.session_page(engine=history, filters=WEEK, sort="id; drop table")
    with pytest.raises(sessions.TableInputError):
        sessions.user_page(engine=history, filters=WEEK, limit=0)


@pytest.mark.parametrize("descending", [False, True], ids=["a-z", "z-a"])
def test_a_page_by_id_is_exact_when_a_straddler_has_no_call_in_the_range(
    engine: Engine, descending: bool
) -> None:
    """Sorted by id, a page sums only the first straddling users that could reach it. One of
    them spans the range without a call in it, so the others fill the page: it must sum the
    next ones too, not take a whole user in their place."""
    start, end = WEEK.start, WEEK.end
    inside = start + timedelta(days=3)
    # The straddlers' ids come first in the order, the silent one first of all.
    whole, straddling, silent = ("a", "b", "b9") if descending else ("b", "a", "a0")
    calls = []
    for i in range(1, 6):
        calls.append(call(ts=inside, session_id=f"{whole}{i}-x", user_id=f"{whole}{i}"))
        for ts in (start - timedelta(days=1), inside, end + timedelta(days=1)):
            user = f"{straddling}{i}"
            calls.append(call(ts=ts, session_id=f"{user}-{ts:%d}", user_id=user))
    for ts in (start - timedelta(days=1), end + timedelta(days=1)):
        calls.append(call(ts=ts, session_id=f"{silent}-{ts:%d}", user_id=silent))
    record_calls(engine=engine, calls=calls)
    refresh(engine)
    everyone = sorted(f"{x}{i}" for x in ("a", "b") for i in range(1, 6))
    if descending:
        everyone.reverse()
    for offset in range(0, 10, 3):
        page = sessions.user_page(
            engine=engine, filters=WEEK, sort="user", descending=descending, offset=offset, limit=3
        )
        assert page.rows["user"].tolist() == everyone[offset : offset + 3], offset
        assert page.total == 10
    one = sessions.user_page(engine=engine, filters=WEEK, sort="user", descending=descending)
    assert one.rows["calls"].tolist() == [1] * 10  # each straddler's one call in the week


def test_late_insert_correction_and_delete(own_history: Engine) -> None:
    record_calls(
        engine=own_history,
        calls=[call(ts=END - timedelta(days=3), session_id="edge-a", user_id="edge", turn=3)],
    )
    assert_sessions(own_history, WEEK)
    with own_history.begin() as connection:
        connection.execute(
            update(ModelCall).where(ModelCall.session_id == "acme-1").values(cost_usd=0.5)
        )
        connection.execute(
            update(ModelCall)
            .where(ModelCall.session_id == "edge-b")
            .values(ts=WEEK.start - timedelta(days=1))
        )
    assert_sessions(own_history, WEEK)
    with own_history.begin() as connection:
        connection.execute(text("DELETE FROM model_calls WHERE session_id = 'edge-a'"))
    assert_sessions(own_history, WEEK)
    assert "edge-a" not in set(sessions.all_sessions(engine=own_history, filters=WEEK)["session"])
    assert sessions.session_totals(engine=own_history, session_id="edge-a") is None


def test_csv_export_is_the_whole_sorted_table(history: Engine) -> None:
    whole = sessions.all_sessions(engine=history, filters=WEEK)
    out = sessions.csv_file(engine=history, table="sessions", filters=WEEK, chunk=37)
    frame = pd.read_csv(io.BytesIO(out.read()))
    assert frame["session"].tolist() == whole["session"].tolist()
    assert frame["calls"].tolist() == whole["calls"].tolist()
    users = sessions.csv_file(
        engine=history, table="users", filters=WEEK, sort="user", descending=False
    )
    assert pd.read_csv(users)["user"].tolist() == sorted(
        sessions.all_users(engine=history, filters=WEEK)["user"]
    )


def test_session_totals_are_the_tables_row(history: Engine) -> None:
    """The conversation header's totals are the per-session table's row for a range that
    holds the whole session."""
    everything = Filters(start=END - timedelta(days=30), end=END + timedelta(days=1))
    table = sessions.all_sessions(engine=history, filters=everything).set_index("session")
    for session_id in table.index[:20]:
        totals = sessions.session_totals(engine=history, session_id=session_id)
        assert totals is not None
        row = table.loc[session_id]
        for key in ("calls", "tokens", "turns", "summarizations"):
            assert totals[key] == row[key]
        assert totals["cost_usd"] == pytest.approx(row["cost_usd"])


def test_queued_days_are_exact_before_they_settle(
    history: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No background settling here: the read must go through the queued-day path.
    monkeypatch.setattr("data.analytics.freshness._settle_in_background", lambda engine: None)
    record_calls(
        engine=history,
        calls=[call(ts=END - timedelta(hours=5), latency_ms=99_000.0, session_id="slow")],
    )
    refresh_hours(history)  # what a page view does; the day waits for settle_days()
    with history.connect() as connection:
        assert connection.execute(select(RollupDirtyDays.day)).first() is not None
    got = latency.latency_over_time(engine=history, filters=WEEK, metric="model")
    df = raw(history, WEEK)
    df = df[(df["purpose"] == "chat") & (df["status"] == "ok")]
    df = df.assign(bucket=df["ts"].dt.floor("D"))
    want = df.groupby(["bucket", "model"])["latency_ms"].quantile(0.99)
    got = got.set_index(["bucket", "model"])["p99"]
    assert got.to_numpy() == pytest.approx(want.reindex(got.index).to_numpy(), rel=1e-9)
    assert settle_days(history) >= 1
    again = latency.latency_over_time(engine=history, filters=WEEK, metric="model")
    assert again.set_index(["bucket", "model"])["p99"].to_numpy() == pytest.approx(
        got.to_numpy(), rel=1e-9
    )


def test_a_change_against_a_nearly_empty_period_is_new() -> None:
    from data.analytics.compare import change

    assert change(162.94, 1.0, calls_now=10_000, calls_before=60) == (
        "new: only 60 calls in the previous period"
    )
    assert change(5.0, 0.0, calls_now=10, calls_before=0) == "new: no calls in the previous period"
    assert change(110.0, 100.0, calls_now=1000, calls_before=900) == "+10.0% vs previous period"
    assert change(None, 1.0, calls_now=1, calls_before=1) is None


def test_demo_rows_are_found_in_their_range(history: Engine) -> None:
    from data.analytics.compare import has_demo_rows

    assert has_demo_rows(engine=history, filters=WEEK)
    later = Filters(start=END + timedelta(days=1), end=END + timedelta(days=2))
    record_calls(engine=history, calls=[call(ts=later.start + timedelta(hours=1))])
    assert not has_demo_rows(engine=history, filters=later)  # a live call only


def test_one_users_sessions_are_read_off_the_user_index(history: Engine) -> None:
    """SQLite read every session of the range off a span index and kept the user's; the span
    columns are kept from its planner (a unary +) for a user filter. Both the range's and the
    user's sessions agree with the unfiltered table, and the two columns are different SQL in
    SQLAlchemy's statement cache."""
    user = replace(WEEK, user="edge")
    whole, _ = session_sql._session_parts(user, None, None)
    if history.dialect.name == "sqlite":
        sql = str(whole.compile(history, compile_kwargs={"literal_binds": True}))
        with history.connect() as connection:
            plan = " ".join(
                str(r[-1]) for r in connection.execute(text(f"EXPLAIN QUERY PLAN {sql}"))
            )
        assert "USING INDEX ix_rollup_sessions_user" in plan and "span" not in plan, plan
    everyone = sessions.all_sessions(engine=history, filters=WEEK)
    mine = sessions.all_sessions(engine=history, filters=user)
    assert sorted(mine["session"]) == sorted(everyone[everyone["user"] == "edge"]["session"])
    first = session_sql._unindexed(session_sql.RS.first_call) >= WEEK.start
    last = session_sql._unindexed(session_sql.RS.last_call) >= WEEK.start
    assert first._generate_cache_key() != last._generate_cache_key()
