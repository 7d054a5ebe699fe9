"""The replica drill: a real primary and a real hot standby (tests/helpers/replica.py). The
analyst pages read the standby only while its figures are exact: caught up, or behind with
"data as of …" and no unrefreshed hour; otherwise, and when it is down, they read the
primary and say why. Every figure is checked against plain SQL on the primary."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import streamlit as st
from sqlalchemy import Engine, text

from data.analytics import cost, replica
from data.analytics.filters import Filters
from data.store.db import make_engine, writer
from data.store.recorder import record_calls
from tests.helpers.analyst_pages import open_page, sql
from tests.helpers.records import call
from tests.helpers.replica import Pair, streaming_pair

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with streaming_pair() as started:
        yield started


@pytest.fixture(scope="module")
def engines(pair: Pair) -> Iterator[tuple[Engine, Engine]]:
    primary, standby = pair.engines()
    yield primary, standby
    primary.dispose()
    standby.dispose()


@pytest.fixture(autouse=True)
def replica_state(pair: Pair, engines: tuple[Engine, Engine]) -> Iterator[None]:
    """Each test starts with the standby up, replaying, and tried again."""
    replica.forget_failures()
    yield
    if not (pair.root / "standby" / "postmaster.pid").exists():
        pair.start_standby()
    with engines[1].connect() as connection:
        connection.execute(text("SELECT pg_wal_replay_resume()"))
    replica.forget_failures()


def window() -> Filters:
    now = datetime.now(UTC)
    return Filters(start=now - timedelta(days=1), end=now + timedelta(hours=1), preset="custom")


def raw_totals(primary: Engine) -> tuple[int, float]:
    calls, cost_usd = sql(primary, "SELECT count(*), coalesce(sum(cost_usd), 0) FROM model_calls")
    return int(calls), float(cost_usd)


def add_calls(primary: Engine, n: int, *, user: str = "u1") -> None:
    record_calls(
        engine=primary,
        calls=[
            call(user_id=user, session_id=f"{user}-s{i}", cost_usd=0.001 * (i + 1))
            for i in range(n)
        ],
    )


def replay(standby: Engine, what: str) -> None:
    with standby.connect() as connection:
        connection.execute(text(f"SELECT pg_wal_replay_{what}()"))
        if what == "pause":  # pausing is requested; wait until replay has stopped
            for _ in range(200):
                state = connection.execute(text("SELECT pg_get_wal_replay_pause_state()")).scalar()
                if state == "paused":
                    return
                connection.execute(text("SELECT pg_sleep(0.01)"))
            pytest.fail("the standby did not pause its replay")


def figures(engine: Engine) -> tuple[int, float]:
    totals = cost.page_data(engine=engine, filters=window()).totals
    return totals.calls, round(totals.cost_usd, 9)


def test_the_standby_streams_and_refuses_writes(engines: tuple[Engine, Engine]) -> None:
    primary, standby = engines
    assert sql(standby, "SELECT pg_is_in_recovery()") == (True,)
    assert sql(primary, "SELECT pg_is_in_recovery()") == (False,)
    assert writer(standby) is primary and writer(primary) is primary


def test_a_caught_up_replica_shows_the_primarys_figures(engines: tuple[Engine, Engine]) -> None:
    primary, standby = engines
    add_calls(primary, 12)
    # The calls' hours are dirty: the view refreshes them on the primary, waits for the
    # standby to replay that refresh, then reads the standby.
    reading = replica.choose(primary, standby, max_wait_s=5)
    assert reading.on_replica and reading.engine is standby
    assert reading.as_of is None and reading.problem is None
    assert figures(standby) == pytest.approx(raw_totals(primary))
    assert sql(standby, "SELECT count(*) FROM rollup_dirty") == (0,)


def test_a_paused_replica_shows_exact_older_figures_as_of_its_last_commit(
    engines: tuple[Engine, Engine],
) -> None:
    primary, standby = engines
    add_calls(primary, 3, user="before")
    assert replica.choose(primary, standby, max_wait_s=5).on_replica  # refreshed and replayed
    before = raw_totals(primary)
    replay(standby, "pause")
    add_calls(primary, 5, user="after")
    reading = replica.choose(primary, standby, max_wait_s=0.2)
    # Behind, but the standby's snapshot holds no unrefreshed hour: its figures are exact for
    # the moment of its last replayed commit, and the page says which moment.
    assert reading.on_replica and reading.problem is None
    assert reading.as_of is not None and reading.as_of <= datetime.now(UTC)
    assert reading.lag_s is not None and reading.lag_s >= 0
    assert reading.key == f"replica@{reading.as_of.isoformat()}"
    assert figures(reading.engine) == pytest.approx(before)
    assert raw_totals(primary) != before  # the primary has moved on
    replay(standby, "resume")
    caught_up = replica.choose(primary, standby, max_wait_s=5)
    assert caught_up.on_replica and caught_up.as_of is None
    assert figures(standby) == pytest.approx(raw_totals(primary))


def test_a_replica_behind_with_unrefreshed_hours_sends_the_view_to_the_primary(
    engines: tuple[Engine, Engine],
) -> None:
    primary, standby = engines
    assert replica.choose(primary, standby, max_wait_s=5).on_replica
    add_calls(primary, 4, user="dirty")
    # The standby replays the new calls and their dirty hours, then stops before the refresh.
    with primary.connect() as connection:
        lsn = connection.execute(text("SELECT pg_current_wal_flush_lsn()::text")).scalar()
    with standby.connect() as connection:
        for _ in range(500):
            if connection.execute(
                text("SELECT pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn)"), {"lsn": lsn}
            ).scalar():
                break
            connection.execute(text("SELECT pg_sleep(0.01)"))
    replay(standby, "pause")
    assert sql(standby, "SELECT count(*) > 0 FROM rollup_dirty") == (True,)
    reading = replica.choose(primary, standby, max_wait_s=0.2)
    assert not reading.on_replica and reading.engine is primary
    assert reading.problem is not None
    assert "behind and has not replayed the latest rollup refresh" in reading.problem
    assert figures(reading.engine) == pytest.approx(raw_totals(primary))


def test_a_stopped_replica_falls_back_to_the_primary_with_a_banner(
    pair: Pair, engines: tuple[Engine, Engine]
) -> None:
    primary, standby = engines
    add_calls(primary, 2, user="down")
    pair.stop_standby()
    reading = replica.choose(primary, standby, max_wait_s=0.2, retry_s=30)
    assert not reading.on_replica and reading.engine is primary
    where = f"Postgres (127.0.0.1:{pair.standby_port}/acb)"
    assert reading.problem is not None and reading.problem.startswith(
        f"The read replica {where} is unavailable ("
    )
    assert figures(reading.engine) == pytest.approx(raw_totals(primary))
    # Not tried again on every rerun while it is down ...
    pair.start_standby()
    assert replica.choose(primary, standby, max_wait_s=5, retry_s=30).problem is not None
    # ... and read again once the pause is over.
    replica.forget_failures()
    back = replica.choose(primary, standby, max_wait_s=5)
    assert back.on_replica and back.problem is None
    assert figures(standby) == pytest.approx(raw_totals(primary))


@pytest.fixture
def page_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, pair: Pair, engines: tuple[Engine, Engine]
) -> Iterator[Engine]:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", pair.url(pair.primary_port, "acb"))
    monkeypatch.setenv("DATABASE_READ_URL", pair.url(pair.standby_port, "acb"))
    monkeypatch.setenv("DATABASE_READ_MAX_WAIT_MS", "300")
    monkeypatch.setenv("METRICS_PORT", "0")
    st.cache_resource.clear()
    st.cache_data.clear()
    yield engines[0]
    st.cache_resource.clear()
    st.cache_data.clear()


def cost_cards(at: Any) -> tuple[str, str]:
    metrics = {m.label: m.value for m in at.metric}
    return metrics["Model calls"], metrics["Cost (USD)"]


def expected_cards(primary: Engine, since: datetime) -> tuple[str, str]:
    calls, cost_usd = sql(
        primary,
        "SELECT count(*), coalesce(sum(cost_usd), 0) FROM model_calls WHERE ts >= :since",
        since=since,
    )
    return f"{calls:,}", f"${cost_usd:,.4f}"


def test_the_cost_page_on_the_replica_says_where_its_figures_come_from(
    pair: Pair, page_env: Engine
) -> None:
    primary, standby = page_env, None
    add_calls(primary, 6, user="page")
    # Caught up: the page reads the replica and has nothing to say about it.
    at = open_page("pages/cost.py", range="24h")
    since = datetime.now(UTC) - timedelta(hours=24)
    assert cost_cards(at) == expected_cards(primary, since)
    assert not [i for i in at.info if "Data as of" in i.value]
    assert not [w for w in at.warning if "read replica" in w.value]
    # Behind (replay paused after a refresh): exact older figures, "data as of" on the page.
    standby = make_engine(pair.url(pair.standby_port, "acb"))
    before = expected_cards(primary, since)
    replay(standby, "pause")
    add_calls(primary, 3, user="page-late")
    at = open_page("pages/cost.py", range="24h")
    assert cost_cards(at) == before != expected_cards(primary, since)
    notes = [i.value for i in at.info if i.value.startswith("Data as of ")]
    assert len(notes) == 1 and "the read replica is" in notes[0], [i.value for i in at.info]
    replay(standby, "resume")
    standby.dispose()
    # Down: the primary's figures, and a banner that names the replica (never a password).
    pair.stop_standby()
    at = open_page("pages/cost.py", range="24h")
    assert cost_cards(at) == expected_cards(primary, since)
    banners = [w.value for w in at.warning if "read replica" in w.value]
    assert banners and banners[0].startswith(
        f"The read replica Postgres (127.0.0.1:{pair.standby_port}/acb) is unavailable ("
    )
    assert banners[0].endswith("so this view reads the primary.")


def test_the_status_check_names_the_standby_and_its_state(
    pair: Pair, engines: tuple[Engine, Engine], tmp_path: Any
) -> None:
    from data.config.settings import load_settings
    from data.workers.status import check_all, not_ready_reasons

    settings = load_settings(
        data_dir=tmp_path / "data",
        database_url=pair.url(pair.primary_port, "acb"),
        database_read_url=pair.url(pair.standby_port, "acb"),
    )
    check = check_all(settings, timeout_s=10, names=("replica",))["replica"]
    assert check.ok and check.target == f"Postgres (127.0.0.1:{pair.standby_port}/acb)"
    assert check.version is not None and check.version.startswith("PostgreSQL 15")
    assert ", standby, " in check.version
    # The primary given as a replica: named as the misconfiguration it is.
    wrong = load_settings(
        data_dir=tmp_path / "data",
        database_url=pair.url(pair.primary_port, "acb"),
        database_read_url=pair.url(pair.primary_port, "acb"),
    )
    check = check_all(wrong, timeout_s=10, names=("replica",))["replica"]
    assert check.ok is False and check.error is not None
    assert check.error.startswith("not a standby")
    # Down: failing, but not a reason the agent is not ready (the pages use the primary).
    pair.stop_standby()
    checks = check_all(settings, timeout_s=10, names=("database", "replica"))
    assert checks["replica"].ok is False and checks["database"].ok
    assert not_ready_reasons(checks) == []
    assert not_ready_reasons(checks, required=False)[0].startswith("Read replica (analyst pages): ")
