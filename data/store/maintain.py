"""Weekly maintenance (seed 4.1 and 8): `python -m data.store.maintain` creates model_calls'
monthly partitions ahead (Postgres), applies RETENTION_DAYS, then runs ANALYZE and VACUUM
(Postgres), or ANALYZE, PRAGMA optimize and VACUUM (SQLite), and records each run in
maintenance_runs, which the status page shows."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from data.config.settings import Settings, SettingsError, get_settings
from data.store import partitions
from data.store.db import describe, failure_reason, make_engine
from data.store.orm import utcnow
from data.store.orm_team import MAINTENANCE_TASKS, MaintenanceRun
from data.store.retention import apply_retention

log = logging.getLogger(__name__)
R = MaintenanceRun.__table__.c
MAX_DETAIL = 2000


@dataclass(frozen=True, slots=True)
class RunInfo:
    task: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    rows: int | None
    detail: str | None

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


def start_run(engine: Engine, task: str) -> int:
    if task not in MAINTENANCE_TASKS:
        raise ValueError(f"unknown maintenance task {task!r}")
    with engine.begin() as connection:
        result = connection.execute(
            insert(MaintenanceRun).values(task=task, started_at=utcnow(), status="running")
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def finish_run(
    engine: Engine, run_id: int, *, status: str, rows: int | None = None, detail: str | None = None
) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(MaintenanceRun)
            .where(R.id == run_id)
            .values(
                finished_at=utcnow(),
                status=status,
                rows=rows,
                detail=None if detail is None else detail[:MAX_DETAIL],
            )
        )


def last_runs(*, engine: Engine) -> dict[str, RunInfo]:
    """The latest run of each task that ever ran (task -> run)."""
    latest = (
        select(R.task, func.max(R.id).label("id")).group_by(R.task).subquery()
    )  # ids grow with time
    query = select(R.task, R.started_at, R.finished_at, R.status, R.rows, R.detail).join(
        latest, latest.c.id == R.id
    )
    with engine.connect() as connection:
        return {row.task: RunInfo(*row) for row in connection.execute(query)}


def _analyze(engine: Engine) -> str:
    with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
        connection.exec_driver_sql("ANALYZE")
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA optimize")
    return "planner statistics updated"


def _vacuum(engine: Engine) -> str:
    # Not VACUUM FULL on Postgres: that locks every table; plain VACUUM runs beside the app.
    with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
        connection.exec_driver_sql("VACUUM")
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return "dead rows reclaimed" if engine.dialect.name == "postgresql" else "file compacted"


def run_task(engine: Engine, task: str, settings: Settings) -> RunInfo:
    """Run one task and record it; a failure is recorded (and returned) rather than raised."""
    run_id = start_run(engine, task)
    started = time.perf_counter()
    rows: int | None = None
    try:
        if task == "partitions":
            created = partitions.ensure(engine)
            rows = len(created)
            if engine.dialect.name != "postgresql":
                detail = "SQLite keeps model_calls in one table"
            else:
                ahead = partitions.add_months(
                    partitions.month_start(utcnow()), partitions.AHEAD_MONTHS
                )
                detail = (
                    f"created {', '.join(created)}" if created else "nothing to create"
                ) + f"; model_calls has monthly partitions up to {ahead:%Y-%m}"
        elif task == "retention":
            if settings.retention_days is None:
                detail = "RETENTION_DAYS is not set: nothing deleted"
                rows = 0
            else:
                result = apply_retention(
                    engine=engine, days=settings.retention_days, batch=settings.retention_batch
                )
                rows = result.rows
                detail = (
                    f"before {result.cutoff:%Y-%m-%d %H:%M} UTC: {result.model_calls} model "
                    f"calls, {result.agent_events} events, {result.messages} messages "
                    f"in {result.batches} batches"
                ) + (
                    f"; whole months dropped: {', '.join(result.months_dropped)}"
                    if result.months_dropped
                    else ""
                )
        elif task == "analyze":
            detail = _analyze(engine)
        elif task == "vacuum":
            detail = _vacuum(engine)
        else:
            raise ValueError(f"{task} is not a maintain task")
        status = "ok"
    except SQLAlchemyError as error:
        status, detail = "error", str(getattr(error, "orig", None) or error).strip()
    detail = f"{detail} ({time.perf_counter() - started:.1f} s)"
    finish_run(engine, run_id, status=status, rows=rows, detail=detail)
    return last_runs(engine=engine)[task]


MAINTAIN_TASKS = ("partitions", "retention", "analyze", "vacuum")


def maintain(
    *, engine: Engine, settings: Settings, tasks: tuple[str, ...] = MAINTAIN_TASKS
) -> list[RunInfo]:
    """Partitions ahead first, retention next (so ANALYZE and VACUUM see what is left), then
    ANALYZE, then VACUUM."""
    return [run_task(engine, task, settings) for task in tasks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: the configured one)")
    parser.add_argument(
        "--only",
        help=f"comma-separated tasks to run (default: {','.join(MAINTAIN_TASKS)})",
    )
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tasks = tuple(args.only.split(",")) if args.only else MAINTAIN_TASKS
    unknown = [t for t in tasks if t not in MAINTAIN_TASKS]
    if unknown:
        print(f"error: unknown task {unknown[0]!r} (choose from {MAINTAIN_TASKS})", file=sys.stderr)
        return 2
    from data.config.urls import to_sqlalchemy_url

    url = to_sqlalchemy_url(args.db) if args.db else settings.sqlalchemy_url
    engine = make_engine(url)
    try:
        runs = maintain(engine=engine, settings=settings, tasks=tasks)
    except SQLAlchemyError as error:
        print(f"error: database {describe(url)}: {failure_reason(error)}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    for run in runs:
        print(f"{run.task}: {run.status}, {run.detail}")
    return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
