"""Analyst page data functions at scale: cold and warm timings per page, 7-day and 90-day ranges.

Prints one JSON object with one entry per database: rows, page_p95_ms (the worst page, 90-day
range, cold), naive_ratio (a naive GROUP BY over raw rows divided by that page time), the worst
cold and warm p95 over every view, incremental_refresh_ms (what a page view pays after one new
call), Postgres table and index sizes, and the detail per page, range (7 and 90 days) and filter
(none, one model, one user), each with the machine's load average when it was measured.

The history is the demo generator's, with its planted conversation outcomes (one current
verdict per ended session, an earlier one for a few) for the Outcomes page, and reviewer
outcome labels on about 2 % of the sessions for its calibration.

    python bench/pages.py [--rows N] [--db URL ...] [--reuse]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import Engine, insert, text

from data.analytics import (
    context_usage,
    cost,
    feedback_report,
    latency,
    outcome_agreement,
    outcomes,
    sessions,
)
from data.analytics.compare import has_demo_rows
from data.analytics.filters import Filters, parse_filters
from data.analytics.rollups import refresh, refresh_hours, settle_days
from data.analytics.rollups import warm as warm_refresh
from data.config import heap
from data.config.urls import to_libpq_url, to_sqlalchemy_url
from data.store import demo_outcomes, partitions
from data.store.db import describe, make_engine
from data.store.demo import history
from data.store.migrate import upgrade
from data.store.orm import ChatSession, ModelCall
from data.store.orm_outcomes import ConversationOutcome
from data.store.records import CallRecord
from data.workflows import review, review_candidates, review_scores

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/acb_bench"
END = datetime(2026, 11, 1, tzinfo=UTC)


def pages(engine: Engine, f: Filters) -> dict[str, Callable[[], object]]:
    """Every data call each page makes for one view (the same functions the pages use)."""
    queue = review.QueueFilters(start=f.start, end=f.end, models=f.models, user=f.user)

    def cost_page() -> None:
        view = cost.page_data(engine=engine, filters=f)
        cost.reprice(view.by_model, target_model="gpt-4o-mini")
        outcomes.summary(engine=engine, filters=f)  # the cost per resolved conversation card
        cost.known_models(engine=engine)  # the sidebar's model filter
        has_demo_rows(engine=engine, filters=f)
        # Both tables' first page, by cost; their row counts are the KPIs', as on the page.
        sessions.user_page(engine=engine, filters=f, total=view.totals.users)
        sessions.session_page(engine=engine, filters=f, total=view.totals.sessions)

    def context_page() -> None:
        context_usage.share_above(engine=engine, filters=f, trigger_percent=75)
        context_usage.summarization_over_time(engine=engine, filters=f)
        context_usage.context_histogram(engine=engine, filters=f)
        context_usage.context_over_time(engine=engine, filters=f, trigger_percent=75)
        context_usage.sessions_by_peak_context(engine=engine, filters=f)

    def latency_page() -> None:
        latency.latency_over_time(engine=engine, filters=f, metric="model")
        latency.latency_summary(engine=engine, filters=f, metric="model")
        latency.error_rate_over_time(engine=engine, filters=f)
        latency.slowest_calls(engine=engine, filters=f)

    def feedback_page() -> None:  # the charts, the agreement and the newest local feedback
        feedback_report.page_data(engine=engine, filters=f, local_limit=1_000)

    def review_page() -> None:  # the queue tab: the candidate search, the queue, progress
        review_candidates.candidates(engine=engine, filters=queue, limit=500)
        review_candidates.count_candidates(engine=engine, filters=queue)
        review.queue(engine=engine)
        review_scores.progress(
            engine=engine, day_start=f.end - timedelta(days=1), start=f.start, end=f.end
        )

    def outcomes_page() -> None:  # the cards, the judge's banner and the open Rates tab
        outcomes.summary(engine=engine, filters=f)
        outcome_agreement.calibration(engine=engine, filters=f)
        outcomes.by(engine=engine, filters=f, dimension="day")

    def outcome_tabs() -> None:  # the other three tabs opened one after the other
        outcomes.by_context(engine=engine, filters=f)
        outcome_agreement.pairs(
            engine=engine, filters=f, differ=True, limit=outcome_agreement.DISAGREEMENTS_SHOWN
        )
        # The ended table: its count first (for the page number's bounds), then page one.
        outcomes.ended_conversations(engine=engine, filters=f, limit=0)
        outcomes.ended_conversations(engine=engine, filters=f, offset=0, limit=50)

    def sorted_tables() -> None:  # another sort, page 3 and a search: what a click costs
        # Unsearched, a table's row count is the cost page's KPI, read with the page's
        # figures (and cached with them); a search counts its own matches.
        totals = cost.cost_totals(engine=engine, filters=f)
        sessions.session_page(
            engine=engine, filters=f, sort="turns", offset=100, total=totals.sessions
        )
        sessions.user_page(
            engine=engine,
            filters=f,
            sort="user",
            descending=False,
            offset=100,
            total=totals.users,
        )
        sessions.session_page(engine=engine, filters=f, search="user-01")

    return {
        "cost": cost_page,
        "context": context_page,
        "latency": latency_page,
        "feedback": feedback_page,
        "review": review_page,
        "outcomes": outcomes_page,
        "outcome_tabs": outcome_tabs,
        "tables": sorted_tables,
    }


def naive(engine: Engine, f: Filters) -> None:
    """What a first version would do: group the raw rows, no index, no rollup."""
    day = "date(ts)" if engine.dialect.name == "sqlite" else "date_trunc('day', ts)"
    with engine.connect() as connection:
        connection.execute(
            text(
                f"SELECT {day}, model, user_id, session_id, count(*), sum(cost_usd), "
                "sum(input_tokens), sum(output_tokens), max(latency_ms) FROM model_calls "
                "GROUP BY 1, 2, 3, 4"
            )
        ).all()


def one_call(ts: datetime, session: str) -> CallRecord:
    """One priced gpt-4o-mini chat call of demo-user-001: what the refresh benchmarks write."""
    return CallRecord(
        ts=ts,
        user_id="demo-user-001",
        session_id=session,
        turn=1,
        purpose="chat",
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=1000,
        cached_input_tokens=0,
        output_tokens=100,
        cost_usd=0.0002,
        cost_status="computed",
        latency_ms=800.0,
        ttft_ms=200.0,
        context_tokens=1000,
        context_window=128_000,
    )


def incremental(engine: Engine, samples: int = 20) -> dict[str, object]:
    """What a page view pays after a chat turn (ensure_fresh: the hour it touched, its sessions
    and user), in the history's last hour and in its busiest one, and what the background
    settling of that call's day takes."""
    from data.store.recorder import record_calls

    with engine.connect() as connection:
        busiest = connection.execute(
            text("SELECT hour FROM rollup_hourly GROUP BY hour ORDER BY sum(calls) DESC LIMIT 1")
        ).scalar_one()
    hours = {"last_hour": END - timedelta(hours=1), "busiest_hour": busiest}
    detail: dict[str, dict[str, float]] = {}
    settles: list[float] = []
    for label, hour in hours.items():
        with engine.connect() as connection:
            in_hour = connection.execute(
                text("SELECT count(*) FROM model_calls WHERE ts >= :a AND ts < :b"),
                {"a": hour, "b": hour + timedelta(hours=1)},
            ).scalar_one()
        times: list[float] = []
        for i in range(samples):
            record_calls(
                engine=engine,
                calls=[one_call(hour + timedelta(minutes=30), f"bench-refresh-{label}-{i}")],
            )
            started = time.perf_counter()
            refresh_hours(engine)
            times.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            settle_days(engine)
            settles.append((time.perf_counter() - started) * 1000)
        detail[label] = {
            "calls_in_hour": in_hour,
            "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(_p95(times), 1),
            "max_ms": round(max(times), 1),
        }
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM model_calls WHERE session_id LIKE 'bench-refresh-%'"))
    refresh(engine)
    return {
        "incremental_refresh_p95_ms": max(d["p95_ms"] for d in detail.values()),
        "incremental_refresh": detail,
        "day_settle_background_ms": round(statistics.median(settles), 1),
    }


PAGE_TABLES = (
    "model_calls",
    "chat_sessions",
    "messages",
    "feedback_thumbs",
    "review_items",
    "review_scores",
    "conversation_outcomes",
)


def sizes(
    engine: Engine, tables: tuple[str, ...] = PAGE_TABLES, rollups: bool = True
) -> dict[str, dict[str, float]]:
    """Postgres: rows, table MB and index MB of `tables` (every table the pages read by
    default) and, with `rollups`, of every rollup table; a partitioned table's are the sums
    over its partitions."""
    if engine.dialect.name != "postgresql":
        return {}
    query = text(
        "SELECT c.relname, sum(greatest(l.reltuples, 0))::bigint, "
        "sum(pg_table_size(l.oid)) / 1048576.0, sum(pg_indexes_size(l.oid)) / 1048576.0 "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_class l ON (c.relkind = 'r' AND l.oid = c.oid) OR (c.relkind = 'p' AND l.oid "
        "IN (SELECT relid FROM pg_partition_tree(c.oid) WHERE isleaf)) "
        "WHERE n.nspname = 'public' AND NOT c.relispartition "
        "AND ((:rollups AND c.relname LIKE 'rollup%') OR c.relname = ANY(:tables)) "
        "GROUP BY c.relname ORDER BY 3 DESC"
    ).bindparams(rollups=rollups, tables=list(tables))
    with engine.connect() as connection:
        return {
            name: {
                "rows": int(rows),
                "table_mb": round(float(t), 1),
                "index_mb": round(float(i), 1),
            }
            for name, rows, t, i in connection.execute(query)
        }


def _p95(samples: list[float]) -> float:
    return max(samples) if len(samples) < 20 else statistics.quantiles(samples, n=20)[-1]


def _database_mb(engine: Engine) -> float | None:
    """Postgres: the whole database's size on disk, every table, index and rollup."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as connection:
        size = connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    return round(size / 1048576, 1)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


CALL_COLUMNS = [
    "ts",
    "user_id",
    "session_id",
    "turn",
    "purpose",
    "provider",
    "model",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "usage_source",
    "cost_usd",
    "cost_status",
    "latency_ms",
    "ttft_ms",
    "context_tokens",
    "context_window",
    "status",
    "error",
    "run_id",
    "demo",
]
SESSION_COLUMNS = ["id", "user_id", "title", "created_at", "updated_at", "demo", "closed_at"]
OUTCOME_COLUMNS = [c.name for c in ConversationOutcome.__table__.columns if c.name != "id"]
CHUNK_SESSIONS = 20_000
LABELLED_EVERY = 5  # of the demo's reviewer labels (about a tenth of the sessions): about 2 %


GENERATED = 1_000_000  # above 2M calls on Postgres: this many generated, then copied in SQL


def load(engine: Engine, rows: int) -> None:
    """The benchmark history, written a chunk of sessions at a time (COPY on Postgres): ten
    million calls never sit in memory at once. Above 2M calls on Postgres, 1M calls are
    generated and the database copies them under new user and session ids (and a few seconds
    earlier) until there are `rows`: N/1M times the users and sessions in the same window,
    written by INSERT ... SELECT at the server's speed instead of Python's, from a temporary
    copy of the generated rows (never by scanning the growing table). Each chunk's
    conversations get the demo's planted outcomes (data/store/demo_outcomes.py), with a fifth
    of its reviewer labels. Then the feedback the feedback and review pages read: a sample of
    answers with a thumbs, and review scores."""
    copies = (
        max(rows // GENERATED, 1) if engine.dialect.name == "postgresql" and rows > 2_000_000 else 1
    )
    base = rows // copies
    chunks = history(
        days=90,
        users=max(base // 250, 10),
        sessions=max(base // 25, 10),
        calls=base,
        seed=1,
        end=END,
    )
    done = 0
    started = time.perf_counter()
    partitions.ensure(engine, since=END - timedelta(days=90))  # the history's months (Postgres)
    indexes = _drop_indexes(engine)
    for chunk in itertools.count():
        batch = list(itertools.islice(chunks, CHUNK_SESSIONS))
        if not batch:
            break
        planted = demo_outcomes.plant(
            sessions=batch, end=END, seed=chunk, judge_model="gpt-4o-mini"
        )
        sessions = [{**b.session, "closed_at": planted.closed.get(b.session["id"])} for b in batch]
        calls = [c for b in batch for c in b.calls]
        _write(engine, "chat_sessions", SESSION_COLUMNS, sessions)
        _write(engine, "model_calls", CALL_COLUMNS, calls)
        _write(engine, "conversation_outcomes", OUTCOME_COLUMNS, planted.verdicts)
        items = planted.items[::LABELLED_EVERY]
        kept = {item["session_id"] for item in items}
        labels = [s for s in planted.scores if s["session_id"] in kept]
        with engine.begin() as connection:
            demo_outcomes.write(connection, demo_outcomes.Planted(items=items, scores=labels))
        done += len(calls)
        print(
            f"generated {done:,} of {base:,} calls ({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )
    if copies > 1:
        _copy(engine, copies, base, rows, started)
    _create_indexes(engine, indexes)
    # One answer in 100 gets a message row and a thumbs (a quarter of them down); one session
    # in 200 is queued for review and scored by one or two of five reviewers.
    with engine.begin() as connection:
        for statement in FEEDBACK_SQL[engine.dialect.name]:
            connection.execute(text(statement))


def _copy(engine: Engine, copies: int, base: int, rows: int, started: float) -> None:
    """Postgres: copy the generated history `copies - 1` times (copy k: ids suffixed -r<k>,
    times k * 7 s earlier), one transaction per copy, from temporary tables that hold the
    generated rows."""
    call_columns = ", ".join(CALL_COLUMNS)
    copied = ", ".join(
        {
            "ts": "ts - make_interval(secs => :k * 7)",
            "user_id": "user_id || '-r' || :k",
            "session_id": "session_id || '-r' || :k",
        }.get(c, c)
        for c in CALL_COLUMNS
    )
    outcome_columns = ", ".join(OUTCOME_COLUMNS)
    copied_outcomes = ", ".join(
        {
            "session_id": "session_id || '-r' || :k",
            "user_id": "user_id || '-r' || :k",
            "ended_at": "ended_at - make_interval(secs => :k * 7)",
            "judged_at": "judged_at - make_interval(secs => :k * 7)",
        }.get(c, c)
        for c in OUTCOME_COLUMNS
    )
    with engine.connect() as connection:
        connection.execute(text("SET synchronous_commit = off"))
        for table in BASE_TABLES:
            connection.execute(text(f"CREATE TEMP TABLE base_{table} AS SELECT * FROM {table}"))
        connection.execute(text("CREATE INDEX ON base_review_items (session_id)"))
        connection.commit()
        for k in range(1, copies):
            for statement in COPY_SQL:
                connection.execute(
                    text(
                        statement.format(
                            call_columns=call_columns,
                            copied=copied,
                            outcome_columns=outcome_columns,
                            copied_outcomes=copied_outcomes,
                        )
                    ),
                    {"k": k},
                )
            connection.commit()
            print(
                f"copied {base * (k + 1):,} of {rows:,} calls "
                f"({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
            )


def _drop_indexes(engine: Engine) -> list[str]:
    """Postgres: drop model_calls' secondary indexes for the load (one sorted build each
    afterwards is many times faster than maintaining six B-trees row by row); their
    definitions, to recreate them."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.begin() as connection:
        rows = connection.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
                "('model_calls', 'chat_sessions') AND indexname NOT LIKE '%pkey'"
            )
        ).all()
        for name, _ in rows:
            connection.execute(text(f'DROP INDEX "{name}"'))
    return [definition for _, definition in rows]


def _create_indexes(engine: Engine, definitions: list[str]) -> None:
    if not definitions:
        return
    started = time.perf_counter()
    with engine.begin() as connection:
        connection.execute(text("SET maintenance_work_mem = '512MB'"))
        for definition in definitions:
            # A partitioned table's definition reads ON ONLY: that would make an empty parent
            # index and build none of the partitions'.
            connection.execute(text(definition.replace(" ON ONLY ", " ON ")))
    print(
        f"rebuilt {len(definitions)} indexes ({time.perf_counter() - started:.0f} s)",
        file=sys.stderr,
    )


def _write(engine: Engine, table: str, columns: list[str], rows: list[dict[str, object]]) -> None:
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            with (
                raw.cursor() as cursor,  # type: ignore[attr-defined]
                cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row([row[c] for c in columns])
            raw.commit()
        finally:
            raw.close()
        return
    model = {
        "chat_sessions": ChatSession,
        "model_calls": ModelCall,
        "conversation_outcomes": ConversationOutcome,
    }[table]
    with engine.begin() as connection:
        for i in range(0, len(rows), 5000):
            connection.execute(insert(model), rows[i : i + 5000])


_FEEDBACK = [
    "INSERT INTO messages (session_id, turn, role, content, created_at) "
    "SELECT session_id, turn, 'assistant', 'An answer.', ts FROM model_calls "
    "WHERE purpose = 'chat' AND status = 'ok' AND id % 100 = 0",
    "INSERT INTO feedback_thumbs (message_id, session_id, turn, user_id, score, created_at, "
    "updated_at, version, feedback_uuid, sync_state, attempts, answered_at, chat_model) "
    "SELECT m.id, m.session_id, m.turn, s.user_id, CASE WHEN m.id % 4 = 0 THEN 0 ELSE 1 END, "
    "m.created_at, m.created_at, 1, {uuid}, 'local', 0, m.created_at, "
    "(SELECT c.model FROM model_calls c WHERE c.session_id = m.session_id AND c.turn = m.turn "
    "AND c.purpose = 'chat' AND c.status = 'ok' ORDER BY c.ts DESC, c.id DESC LIMIT 1) "
    "FROM messages m JOIN chat_sessions s ON s.id = m.session_id",
    # (a session that already has its outcome labels keeps that item)
    "INSERT INTO review_items (session_id, reviews_required, created_by, created_at) "
    "SELECT id, 2, 'bench', created_at FROM chat_sessions WHERE {hash} % 200 = 0 "
    "ON CONFLICT DO NOTHING",
    "INSERT INTO review_scores (item_id, session_id, reviewer, score, created_at, "
    "feedback_uuid, sync_state, attempts) "
    "SELECT i.id, i.session_id, 'reviewer-' || (i.id % 5), 1 + i.id % 5, i.created_at, {uuid}, "
    "'local', 0 FROM review_items i WHERE i.created_by = 'bench'",
    "INSERT INTO review_scores (item_id, session_id, reviewer, score, created_at, "
    "feedback_uuid, sync_state, attempts) "
    "SELECT i.id, i.session_id, 'reviewer-' || ((i.id + 1) % 5), 1 + (i.id * 7) % 5, "
    "i.created_at, {uuid}, 'local', 0 FROM review_items i "
    "WHERE i.created_by = 'bench' AND i.id % 2 = 0",
]
# Postgres copies (load): what copy :k writes, from the temporary tables of the generated rows.
BASE_TABLES = (
    "chat_sessions",
    "model_calls",
    "conversation_outcomes",
    "review_items",
    "review_scores",
)
COPY_SQL = [
    "INSERT INTO chat_sessions (id, user_id, title, created_at, updated_at, demo, closed_at) "
    "SELECT id || '-r' || :k, user_id || '-r' || :k, title, "
    "created_at - make_interval(secs => :k * 7), updated_at - make_interval(secs => :k * 7), "
    "demo, closed_at - make_interval(secs => :k * 7) FROM base_chat_sessions",
    "INSERT INTO model_calls ({call_columns}) SELECT {copied} FROM base_model_calls",
    "INSERT INTO conversation_outcomes ({outcome_columns}) SELECT {copied_outcomes} "
    "FROM base_conversation_outcomes",
    "INSERT INTO review_items (session_id, reviews_required, assigned_to, created_by, "
    "created_at) SELECT session_id || '-r' || :k, reviews_required, assigned_to, created_by, "
    "created_at - make_interval(secs => :k * 7) FROM base_review_items",
    "INSERT INTO review_scores (item_id, session_id, reviewer, score, comment, run_id, "
    "created_at, outcome, topic, feedback_uuid, sync_state, attempts, next_attempt_at) "
    "SELECT i.id, i.session_id, s.reviewer, s.score, s.comment, s.run_id, "
    "s.created_at - make_interval(secs => :k * 7), s.outcome, s.topic, "
    "gen_random_uuid()::text, s.sync_state, s.attempts, "
    "s.next_attempt_at - make_interval(secs => :k * 7) FROM base_review_scores s "
    "JOIN review_items i ON i.session_id = s.session_id || '-r' || :k",
]
FEEDBACK_SQL = {
    "postgresql": [
        s.format(uuid="gen_random_uuid()::text", hash="abs(hashtext(id))") for s in _FEEDBACK
    ],
    "sqlite": [s.format(uuid="lower(hex(randomblob(16)))", hash="rowid") for s in _FEEDBACK],
}


def prepare(url: str, rows: int, reuse: bool) -> tuple[Engine, float | None]:
    if url.startswith("postgresql"):
        admin = to_libpq_url(to_sqlalchemy_url(url)).rsplit("/", 1)
        with psycopg.connect(admin[0] + "/postgres", autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (admin[1],)
            ).fetchone()
            if exists and not reuse:
                conn.execute(f'DROP DATABASE "{admin[1]}" WITH (FORCE)')
            if not exists or not reuse:
                conn.execute(f'CREATE DATABASE "{admin[1]}"')
    elif not reuse:
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    upgrade(url)
    engine = make_engine(to_sqlalchemy_url(url))
    with engine.connect() as connection:
        have = connection.execute(text("SELECT count(*) FROM model_calls")).scalar_one()
        verdicts = connection.execute(
            text("SELECT count(*) FROM conversation_outcomes")
        ).scalar_one()
    if have != rows or not verdicts:  # (an earlier run's rows from before outcomes: reload)
        with engine.begin() as connection:
            for table in (
                "review_scores",
                "review_claims",
                "review_items",
                "feedback_thumbs",
                "conversation_outcomes",
                "outcome_jobs",
                "model_calls",
                "messages",
                "chat_sessions",
            ):
                connection.execute(text(f"DELETE FROM {table}"))
        started = time.perf_counter()
        load(engine, rows)
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
        LOAD_S[url] = time.perf_counter() - started
        print(f"loaded and analyzed ({LOAD_S[url]:.0f} s)", file=sys.stderr)
    started = time.perf_counter()
    hours = refresh(engine)  # the one-time roll-up of everything just loaded
    days = outcomes.refresh(engine)  # and of the verdicts (their triggers queued the days)
    if days and engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("ANALYZE rollup_outcomes"))
    return engine, (time.perf_counter() - started if hours or days else None)


LOAD_S: dict[str, float] = {}  # url: seconds to load and ANALYZE (when this run loaded)
VIEWS = {"": {}, "model": {"model": "gpt-4o"}, "user": {"user": "demo-user-002"}}


def measure(url: str, rows: int, reuse: bool, runs: int, naive_runs: int) -> dict[str, object]:
    engine, refresh_s = prepare(url, rows, reuse)
    heap.settle()  # as the app's processes do once they have started (data.config.heap)
    # As the pages do when they open the database (data.analytics.rollups.warm).
    warm_refresh(engine)
    detail: dict[str, dict[str, object]] = {}
    worst_cold_90 = worst_warm = 0.0
    for preset in ("7d", "90d"):
        for view, params in VIEWS.items():
            f, _ = parse_filters(
                {"range": preset, **params}, known_models=cost.known_models(engine=engine), now=END
            )
            for name, fn in pages(engine, f).items():
                load = load_average()
                samples = timed(fn, runs)
                warm = samples[1:]
                p95 = _p95(warm)
                detail[f"{name}_{preset}{'_' + view if view else ''}"] = {
                    "cold_ms": round(samples[0], 1),
                    "warm_p50_ms": round(statistics.median(warm), 1),
                    "warm_p95_ms": round(p95, 1),
                    "load_1_5_15": load,
                }
                worst_warm = max(worst_warm, p95)
                print(
                    f"{name} {preset} {view or '-'}: {detail[next(reversed(detail))]}",
                    file=sys.stderr,
                )
                if preset == "90d" and not view:
                    worst_cold_90 = max(worst_cold_90, samples[0])
    f90, _ = parse_filters({"range": "90d"}, known_models=[], now=END)
    # (one naive GROUP BY over 100M raw rows takes minutes: --naive-runs 0 leaves it out)
    naive_ms = (
        statistics.median(timed(lambda: naive(engine, f90), naive_runs)) if naive_runs else None
    )
    worst_cold = max(float(d["cold_ms"]) for d in detail.values())  # type: ignore[arg-type]
    result: dict[str, object] = {
        "db": describe(to_sqlalchemy_url(url)),
        "rows": rows,
        "page_p95_ms": round(worst_cold_90, 1),
        "worst_cold_ms_any_view": round(worst_cold, 1),
        "worst_warm_p95_ms_any_view": round(worst_warm, 1),
        "naive_group_by_ms": None if naive_ms is None else round(naive_ms, 1),
        "naive_ratio": None if naive_ms is None else round(naive_ms / worst_cold_90, 2),
        "load_s": round(LOAD_S[url], 1) if url in LOAD_S else None,
        "initial_rollup_s": None if refresh_s is None else round(refresh_s, 1),
        **incremental(engine),
        "load_1_5_15_at_end": load_average(),
        "database_mb": _database_mb(engine),
        "sizes": sizes(engine),
        "pages": detail,
    }
    engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--db",
        action="append",
        help=f"database URL (repeatable); default: a temporary SQLite file and {PG_DEFAULT}",
    )
    parser.add_argument("--reuse", action="store_true", help="keep rows from an earlier run")
    parser.add_argument("--runs", type=int, default=6, help="runs per page (the first is cold)")
    parser.add_argument(
        "--refresh-only",
        action="store_true",
        help="with --reuse: only the refresh after one new call, on the loaded history",
    )
    parser.add_argument(
        "--naive-runs", type=int, default=3, help="runs of the naive GROUP BY (0: leave it out)"
    )
    args = parser.parse_args()
    urls = args.db or [
        f"sqlite:///{Path(tempfile.gettempdir()) / 'acb-bench-pages.sqlite3'}",
        PG_DEFAULT,
    ]
    if args.refresh_only:
        out = []
        for url in urls:
            engine, _ = prepare(url, args.rows, reuse=True)
            warm_refresh(engine)
            out.append({"db": describe(to_sqlalchemy_url(url)), "rows": args.rows})
            out[-1].update(incremental(engine))
            engine.dispose()
        print(json.dumps({"databases": out}))
        return
    print(
        json.dumps(
            {
                "databases": [
                    measure(u, args.rows, args.reuse, args.runs, args.naive_runs) for u in urls
                ]
            }
        )
    )


if __name__ == "__main__":
    main()
