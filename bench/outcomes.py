"""Conversation outcomes at scale: the judge worker's throughput and the end detector's cost.

Prints one JSON object with one entry per database:

- `judged_per_s`: conversations given a verdict per second by one `OutcomeWorker.run_once`
  with an instant judge (a function that returns a fixed verdict, no sleep), over
  --conversations ended conversations of a few turns each (the median of --runs passes, each
  on the same conversations with their jobs and verdicts deleted), and where a pass's time
  went: finding ends and reopened verdicts, leasing, reading the transcript and the rules,
  the judge, saving the verdict with the conversation's figures. The goal is 50 a second.
- `detection`: one `detect_ends` pass (with JUDGE_BACKFILL_DAYS' default of 7 days and with
  no limit) and one `mark_reopened` pass on --sessions chat_sessions updated over 90 days,
  each ended one with its job and its current verdict (the steady state), then with 1,000
  new ends waiting (900 new conversations and 100 resolved ones the customer came back to).
  Every pass runs in a transaction that is rolled back, so each run sees the same rows.

Each figure carries the machine's load average when it was measured. The Postgres database
(default postgresql://postgres@127.0.0.1:5432/acb_bench_outcomes) is dropped and created again;
it and the SQLite file are left behind for EXPLAIN.

    python bench/outcomes.py [--sessions N] [--conversations N] [--db URL ...] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import Connection, Engine, Table, insert, select, text, update

from bench.pages import load_average, sizes
from data.config.topics import topic_names
from data.config.urls import to_libpq_url, to_sqlalchemy_url
from data.store.db import describe, make_engine
from data.store.demo import history
from data.store.migrate import upgrade
from data.store.orm import ChatSession, Message, ModelCall, utcnow
from data.store.orm_outcomes import ConversationOutcome, OutcomeJob
from data.workers.outcome_judge import OutcomeWorker
from data.workflows import outcomes
from data.workflows.outcomes import Conversation, Verdict

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/acb_bench_outcomes"
S = cast(Table, ChatSession.__table__)
M = cast(Table, Message.__table__)
C = cast(Table, ModelCall.__table__)
J = cast(Table, OutcomeJob.__table__)
O = cast(Table, ConversationOutcome.__table__)  # noqa: E741 (the outcomes table, as in SQL)
IDLE_MINUTES, BACKFILL_DAYS, REOPEN_HOURS = 30, 7, 72  # the settings' defaults
NEW_ENDS, RESUMED = 1_000, 100
CHUNK = 50_000
VERDICT = Verdict(
    outcome="resolved",
    topic="order status",
    confidence=0.9,
    reason="The agent answered the question and the customer asked nothing more.",
    quote=None,
    decided_by="judge",
    judge_model="scripted",
    rubric_version="outcome-v1",
)
# Where a pass's time goes: the worker calls these through the module, so wrapping the
# module's attributes times them without touching the worker.
PHASES = {
    "detect_ends": "detect",
    "mark_reopened": "detect",
    "lease": "lease",
    "conversation": "read",
    "rules_verdict": "read",
    "save_verdict": "save",
}


def instant_judge(talk: Conversation) -> Verdict:
    return VERDICT


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


@contextmanager
def phase_timer() -> Iterator[dict[str, float]]:
    """Seconds spent in each phase while the block runs (the judge's own time included)."""
    spent = {"detect": 0.0, "lease": 0.0, "read": 0.0, "judge": 0.0, "save": 0.0}
    saved = {name: getattr(outcomes, name) for name in PHASES}

    def timed(fn: Callable[..., Any], phase: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[phase] += time.perf_counter() - started

        return wrapper

    for name, phase in PHASES.items():
        setattr(outcomes, name, timed(saved[name], phase))
    try:
        yield spent
    finally:
        for name, fn in saved.items():
            setattr(outcomes, name, fn)


def write(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Bulk rows: COPY on Postgres, executemany on SQLite."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        columns = list(rows[0])
        raw = cast(psycopg.Connection, connection.connection.driver_connection)
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row([row[c] for c in columns])
        return
    for i in range(0, len(rows), 5000):
        connection.execute(insert(table), rows[i : i + 5000])


def clear(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in ("conversation_outcomes", "outcome_jobs", "model_calls", "messages"):
            connection.execute(text(f"DELETE FROM {table}"))
        connection.execute(text("DELETE FROM chat_sessions"))


def analyze(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))


# Throughput --------------------------------------------------------------------------------------


def throughput(engine: Engine, conversations: int, runs: int) -> dict[str, object]:
    """Ended conversations with their messages and calls (the demo generator's, not flagged
    demo), judged by one worker pass, `runs` times over."""
    now = utcnow().replace(microsecond=0)
    clear(engine)
    made = list(
        history(
            days=5,
            users=max(conversations // 10, 10),
            sessions=conversations,
            calls=conversations * 4,
            seed=29,
            end=now - timedelta(hours=1),
        )
    )
    with engine.begin() as connection:
        write(connection, S, [{**m.session, "demo": False, "closed_at": None} for m in made])
        write(connection, M, [row for m in made for row in m.messages])
        write(connection, C, [{**row, "demo": False} for m in made for row in m.calls])
    analyze(engine)
    passes = []
    for _ in range(runs):
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM conversation_outcomes"))
            connection.execute(text("DELETE FROM outcome_jobs"))
        load = load_average()
        with phase_timer() as spent:

            def judge(talk: Conversation) -> Verdict:
                started = time.perf_counter()
                verdict = instant_judge(talk)
                spent["judge"] += time.perf_counter() - started
                return verdict

            worker = OutcomeWorker(
                engine,
                judge,
                idle_minutes=IDLE_MINUTES,
                backfill_days=BACKFILL_DAYS,
                reopen_window_hours=REOPEN_HOURS,
                clock=lambda: now,
            )
            started = time.perf_counter()
            report = worker.run_once()
            wall = time.perf_counter() - started
        verdicts = report.judged + report.unjudged
        passes.append(
            {
                "verdicts": verdicts,
                "by_rules": report.by_rules,
                "wall_s": round(wall, 2),
                "judged_per_s": round(verdicts / wall, 1),
                "phases_ms_per_conversation": {
                    **{k: round(1000 * v / max(verdicts, 1), 2) for k, v in spent.items()},
                    "other": round(1000 * (wall - sum(spent.values())) / max(verdicts, 1), 2),
                },
                "load_1_5_15": load,
            }
        )
    rates = [cast(float, p["judged_per_s"]) for p in passes]
    return {
        "conversations": conversations,
        "messages": sum(len(m.messages) for m in made),
        "calls": sum(len(m.calls) for m in made),
        "judged_per_s": round(statistics.median(rates), 1),
        "passes": passes,
    }


# Detection ---------------------------------------------------------------------------------------


def steady_rows(
    rng: random.Random, first: int, count: int, total: int, now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Sessions first..first+count of `total`, last active over 90 days; every ended one with
    its finished job and its current verdict (what the worker leaves behind)."""
    sessions, jobs, verdicts = [], [], []
    topics = topic_names()
    users = max(total // 10, 10)
    for i in range(first, first + count):
        updated = now - timedelta(seconds=rng.uniform(0, 90 * 86_400))
        closed = updated + timedelta(seconds=rng.uniform(5, 120)) if rng.random() < 0.15 else None
        session_id, user_id = f"s-{i:07d}", f"u-{rng.randrange(users):06d}"
        sessions.append(
            dict(
                id=session_id,
                user_id=user_id,
                title="Where is my order?",
                created_at=updated - timedelta(minutes=rng.uniform(1, 30)),
                updated_at=updated,
                demo=False,
                closed_at=closed if closed is None or closed <= now else None,
            )
        )
        ended_by = (
            closed if closed is not None and closed <= now else updated + timedelta(minutes=30)
        )
        if ended_by > now:
            continue  # still going: no job yet
        reason = "closed" if closed is not None and closed <= now else "idle"
        judged_at = ended_by + timedelta(seconds=rng.uniform(1, 30))
        jobs.append(
            dict(
                session_id=session_id,
                user_id=user_id,
                last_message_at=updated,
                end_reason=reason,
                state="done",
                attempts=1,
                lease_until=None,
                lease_token=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                created_at=ended_by,
                finished_at=judged_at,
                detail=None,
            )
        )
        unjudged = rng.random() < 0.02
        outcome = rng.choices(
            ("resolved", "escalated", "abandoned", "unresolved"), (60, 20, 10, 8)
        )[0]
        verdicts.append(
            dict(
                session_id=session_id,
                user_id=user_id,
                ended_at=updated,
                end_reason=reason,
                judged_at=judged_at,
                outcome="unjudged" if unjudged else outcome,
                topic=None if unjudged else rng.choice(topics),
                confidence=None if unjudged else round(rng.uniform(0.5, 0.99), 3),
                reason="" if unjudged else "scripted",
                quote=None,
                quote_found=False,
                decided_by="none" if unjudged else "judge",
                judge_model="gpt-4o-mini",
                rubric_version="outcome-v1",
                attempts=1,
                error="call failed" if unjudged else None,
                reopened=False,
                current=True,
                chat_model=rng.choice(("gpt-4o-mini", "gpt-4.1-mini", "gpt-4o")),
                cost_usd=round(rng.uniform(0.0005, 0.05), 6),
                peak_context_percent=round(rng.uniform(0.5, 80), 2),
                summarizations=0 if rng.random() < 0.9 else 1,
                turns=rng.randint(1, 8),
                demo=False,
            )
        )
    return sessions, jobs, verdicts


def load_steady(engine: Engine, total: int, now: datetime) -> dict[str, object]:
    clear(engine)
    rng = random.Random(29)
    started = time.perf_counter()
    counts = {"sessions": 0, "jobs": 0, "verdicts": 0}
    for first in range(0, total, CHUNK):
        sessions, jobs, verdicts = steady_rows(rng, first, min(CHUNK, total - first), total, now)
        with engine.begin() as connection:
            write(connection, S, sessions)
            write(connection, J, jobs)
            write(connection, O, verdicts)
        counts["sessions"] += len(sessions)
        counts["jobs"] += len(jobs)
        counts["verdicts"] += len(verdicts)
    loaded = time.perf_counter() - started
    analyze(engine)
    return {
        **counts,
        "load_s": round(loaded, 1),
        "analyze_s": round(time.perf_counter() - started - loaded, 1),
    }


def add_new_ends(connection: Connection, now: datetime, rng: random.Random) -> None:
    """NEW_ENDS ends with no job yet: new conversations silent for more than the idle time,
    and RESUMED recently resolved ones the customer came back to (a message after the verdict),
    which mark_reopened reads."""
    resumed = connection.execute(
        select(O.c.session_id, O.c.ended_at)
        .where(
            O.c.current,
            O.c.outcome == "resolved",
            O.c.ended_at >= now - timedelta(hours=REOPEN_HOURS - 2),
            O.c.ended_at <= now - timedelta(hours=3),
        )
        .order_by(O.c.ended_at.desc())
        .limit(RESUMED)
    ).all()
    sessions, messages = [], []
    for i in range(NEW_ENDS - len(resumed)):
        updated = now - timedelta(minutes=rng.uniform(IDLE_MINUTES + 1, 6 * 60))
        session_id = f"new-{i:05d}"
        sessions.append(
            dict(
                id=session_id,
                user_id=f"u-new-{i % 200:03d}",
                title="Where is my order?",
                created_at=updated - timedelta(minutes=5),
                updated_at=updated,
                demo=False,
                closed_at=None,
            )
        )
    for session_id, ended_at in resumed:
        back = ended_at + timedelta(hours=1)
        messages.append(
            dict(
                session_id=session_id,
                turn=9,
                role="user",
                content="It still has not arrived.",
                created_at=back,
                run_id=None,
            )
        )
        connection.execute(
            update(S).where(S.c.id == session_id).values(updated_at=back + timedelta(minutes=1))
        )
    write(connection, S, sessions)
    write(connection, M, messages)


def detection_pass(engine: Engine, now: datetime, *, new_ends: bool) -> dict[str, float]:
    """One pass of each, every one in a transaction that is rolled back (the rows stay as
    loaded; the new ends are added in it first)."""
    out: dict[str, float] = {}
    for name, backfill in (
        ("detect_ends_7d", BACKFILL_DAYS),
        ("detect_ends_all", 0),
        ("mark_reopened", None),
    ):
        with engine.connect() as connection:
            transaction = connection.begin()
            try:
                if new_ends:
                    add_new_ends(connection, now, random.Random(30))
                started = time.perf_counter()
                if backfill is None:
                    found = outcomes.mark_reopened(connection, now=now, window_hours=REOPEN_HOURS)
                else:
                    found = outcomes.detect_ends(
                        connection, now=now, idle_minutes=IDLE_MINUTES, backfill_days=backfill
                    )
                out[f"{name}_ms"] = ms(time.perf_counter() - started)
                out[f"{name}_rows"] = found  # ends enqueued, or verdicts marked reopened
            finally:
                transaction.rollback()
    return out


def detection(engine: Engine, sessions: int, runs: int) -> dict[str, object]:
    now = utcnow().replace(microsecond=0)
    loaded = load_steady(engine, sessions, now)
    result: dict[str, object] = {"sessions": sessions, "load": loaded}
    for case, new_ends in (("steady", False), ("new_ends_1000", True)):
        samples = []
        load = load_average()
        for _ in range(runs):
            samples.append(detection_pass(engine, now, new_ends=new_ends))
        summary: dict[str, object] = {"load_1_5_15": load}
        for key in samples[0]:
            values = [s[key] for s in samples]
            if key.endswith("_ms"):
                summary[key] = {
                    "median": round(statistics.median(values), 1),
                    "max": max(values),
                    "runs": values,
                }
            else:
                summary[key] = values[0]
        result[case] = summary
    return result


def prepare(url: str) -> Engine:
    """A fresh database: Postgres dropped and created again, the SQLite file removed."""
    if url.startswith("postgresql"):
        admin = to_libpq_url(to_sqlalchemy_url(url)).rsplit("/", 1)
        with psycopg.connect(admin[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{admin[1]}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{admin[1]}"')
    else:
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    upgrade(url)
    return make_engine(to_sqlalchemy_url(url))


def measure(url: str, conversations: int, sessions: int, runs: int) -> dict[str, object]:
    engine = prepare(url)
    judged = throughput(engine, conversations, max(runs // 2, 2))
    detected = detection(engine, sessions, runs)
    size = (
        {"sqlite_mb": round(Path(url.removeprefix("sqlite:///")).stat().st_size / 1048576, 1)}
        if engine.dialect.name == "sqlite"
        else sizes(engine, ("chat_sessions", "outcome_jobs", "conversation_outcomes"), False)
    )
    result = {
        "db": describe(to_sqlalchemy_url(url)),
        "judged_per_s": judged.pop("judged_per_s"),
        "throughput": judged,
        "detection": detected,
        "sizes": size,
        "load_1_5_15_at_end": load_average(),
    }
    engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=400_000)
    parser.add_argument("--conversations", type=int, default=2_000)
    parser.add_argument(
        "--db",
        action="append",
        help=f"database URL (repeatable); default: a temporary SQLite file and {PG_DEFAULT}",
    )
    parser.add_argument("--runs", type=int, default=5, help="detection passes per case")
    args = parser.parse_args()
    urls = args.db or [
        f"sqlite:///{Path(tempfile.gettempdir()) / 'acb-bench-outcomes.sqlite3'}",
        PG_DEFAULT,
    ]
    print(
        json.dumps(
            {"databases": [measure(u, args.conversations, args.sessions, args.runs) for u in urls]}
        )
    )


if __name__ == "__main__":
    main()
