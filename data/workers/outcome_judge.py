"""The outcome worker: every JUDGE_INTERVAL_S it finds the conversations that ended, marks
reopened verdicts, and judges each end once: the rules first, then (for the sampled ones) the
judge it was given. It runs in the app and in the standalone API; replicas share the work
through leases (data/workflows/outcomes.py), so no end is judged twice."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine

from data.analytics import outcomes as rollup
from data.config.settings import Settings
from data.config.topics import Topic, load_topics
from data.integrations.metrics import declare_outcomes
from data.store.orm import utcnow
from data.store.orm_outcomes import VERDICTS
from data.workers.base import BackgroundWorker
from data.workflows import outcomes
from data.workflows.outcomes import Judge, PassReport, Verdict

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class OutcomeWorker(BackgroundWorker):
    """Judges ended conversations with `judge` (None: the rules only; the rest wait)."""

    thread_name = "outcome-judge"

    def __init__(
        self,
        engine: Engine,
        judge: Judge | None,
        *,
        idle_minutes: int = 30,
        reopen_window_hours: int = 72,
        sample_rate: float = 1.0,
        backfill_days: int = 7,
        topics: tuple[Topic, ...] | None = None,
        interval_s: float = 30.0,
        batch: int = 10,
        clock: Clock = utcnow,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.judge = judge
        self.idle_minutes = idle_minutes
        self.reopen_window_hours = reopen_window_hours
        self.sample_rate = sample_rate
        self.backfill_days = backfill_days
        self.topics = topics or load_topics()
        declare_outcomes(VERDICTS, [t.name for t in self.topics])
        self.interval_s = interval_s
        self.batch = batch
        self.clock = clock

    @classmethod
    def from_settings(
        cls, settings: Settings, engine: Engine, judge: Judge | None
    ) -> OutcomeWorker:
        return cls(
            engine,
            judge,
            idle_minutes=settings.conversation_idle_minutes,
            reopen_window_hours=settings.reopen_window_hours,
            sample_rate=settings.judge_sample_rate,
            backfill_days=settings.judge_backfill_days,
            topics=load_topics(settings.topics_file),
            interval_s=settings.judge_interval_s,
        )

    def run_once(self, *, limit: int | None = None) -> PassReport:
        """Find ends, mark reopened verdicts, then judge what is leased, a batch at a time,
        until nothing is due (or `limit` ends were taken)."""
        report = PassReport()
        now = self.clock()
        with self.engine.begin() as connection:
            report.enqueued = outcomes.detect_ends(
                connection,
                now=now,
                idle_minutes=self.idle_minutes,
                backfill_days=self.backfill_days,
            )
            report.reopened = outcomes.mark_reopened(
                connection, now=now, window_hours=self.reopen_window_hours
            )
        taken = 0
        while limit is None or taken < limit:
            room = self.batch if limit is None else min(self.batch, limit - taken)
            jobs = outcomes.lease(self.engine, now=self.clock(), limit=room)
            if not jobs:
                break
            taken += len(jobs)
            for job in jobs:
                if self._stop.is_set():
                    return report  # the leases run out and another pass takes them
                self._one(job, report)
        if report.reopened or report.judged or report.unjudged:
            # The page's rollup of the days these verdicts changed: done here too, so the queue
            # of days stays short when nobody opens the page.
            rollup.refresh(self.engine)
        if report.enqueued or report.judged or report.unjudged:
            log.info(
                "outcomes: %d ends found, %d judged (%d by rules), %d unjudged, %d skipped",
                report.enqueued,
                report.judged,
                report.by_rules,
                report.unjudged,
                report.skipped,
            )
        return report

    def _one(self, job: outcomes.Job, report: PassReport) -> None:
        with self.engine.connect() as connection:
            talk = outcomes.conversation(connection, job)
            verdict = outcomes.rules_verdict(connection, job, talk, self.topics)
        if verdict is None and job.attempts > outcomes.MAX_ATTEMPTS:
            verdict = _unjudged(f"the worker stopped {job.attempts - 1} times while judging it")
        if verdict is None and not outcomes.sampled(job.session_id, self.sample_rate):
            if outcomes.skip(self.engine, job, now=self.clock(), detail="not sampled"):
                report.skipped += 1
            return
        if verdict is None and self.judge is None:
            return  # no judge here: the lease runs out and a worker with one takes it
        if verdict is None:
            assert self.judge is not None
            verdict = self.judge(talk)
        if not outcomes.save_verdict(self.engine, job, verdict, now=self.clock()):
            report.lost += 1
            return
        report.outcomes[verdict.outcome] = report.outcomes.get(verdict.outcome, 0) + 1
        if verdict.outcome == "unjudged":
            report.unjudged += 1
        else:
            report.judged += 1
            report.by_rules += verdict.decided_by == "rules"


def _unjudged(error: str) -> Verdict:
    return Verdict(
        outcome="unjudged",
        topic=None,
        confidence=None,
        reason="",
        quote=None,
        decided_by="none",
        judge_model=None,
        rubric_version=outcomes.RULES_VERSION,
        error=error,
    )


_shared: dict[str, OutcomeWorker] = {}
_shared_lock = threading.Lock()


def shared_worker(settings: Settings, engine: Engine, judge: Judge | None) -> OutcomeWorker | None:
    """The process's one outcome worker for this database, started on first use (the chat page
    and the API of one process share it); None when OUTCOME_WORKER is off."""
    if not settings.outcome_worker:
        return None
    with _shared_lock:
        key = settings.sqlalchemy_url
        worker = _shared.get(key)
        if worker is None or (worker.judge is None and judge is not None):
            if worker is not None:
                worker.stop()
            worker = _shared[key] = OutcomeWorker.from_settings(settings, engine, judge)
        return worker.start()


def stop_shared() -> None:
    """Stop every shared worker (tests; a process that shuts down just exits)."""
    with _shared_lock:
        workers = list(_shared.values())
        _shared.clear()
    for worker in workers:
        worker.stop()
