"""The feedback outbox: thumbs and review scores are written to the database first and pushed
to LangSmith by a background worker, so a LangSmith outage loses nothing.

Each row carries a LangSmith feedback id fixed when the row was created. A retry or an update
always addresses that id, so LangSmith never holds a duplicate: a create that LangSmith already
has (409, when an earlier answer was lost) becomes an update of the same feedback. Thumbs that
changed after they synced are pushed again as an update. Transient failures (connection
refused, timeouts, 429, 5xx) wait with exponential backoff; any other rejection (an unknown
run id, 4xx) marks the item failed with the reason, and only "retry now" tries it again."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import requests
from langsmith import Client
from langsmith import utils as ls_utils
from sqlalchemy import Engine, Table, and_, bindparam, or_, select, update
from urllib3.util.retry import Retry

from data.config.settings import Settings
from data.integrations.metrics import observe_feedback_backlog
from data.store.orm import Message, utcnow
from data.store.orm_team import FeedbackThumbs, ReviewScore
from data.workers.base import BackgroundWorker, count_sync_states

log = logging.getLogger(__name__)


class _HandledHere(logging.Filter):
    """The langsmith client logs a traceback for every feedback it fails to create, then
    raises; the outbox catches that, keeps the reason on the item and logs one line per pass,
    so the client's copy is dropped (three tracebacks per rejected item otherwise)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Error creating feedback"


logging.getLogger("langsmith.client").addFilter(_HandledHere())

THUMBS_KEY = "thumbs"  # score 1 (up) or 0 (down)
QUALITY_KEY = "quality"  # the reviewer's score as given, 1-5 (not normalised)
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 600.0
# A worker owns the items it took for this long; if it dies, another takes them after it.
LEASE_S = 120.0
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_ERROR_CHARS = 1000
CHUNK = 100  # run ids per list_feedback request, feedback ids per IN list


def client_from_settings(settings: Settings) -> Client | None:
    """The LangSmith client the worker pushes with, or None when no key is set.

    The client does not retry by itself (urllib3 total=0, one attempt per call): the outbox
    owns retries, with backoff that survives restarts, and one slow retry loop inside the
    client would hold up the whole batch."""
    if not settings.langsmith_feedback_enabled or settings.langsmith_api_key is None:
        return None
    return Client(
        api_url=str(settings.langsmith_endpoint).rstrip("/"),
        api_key=settings.langsmith_api_key.get_secret_value(),
        auto_batch_tracing=False,
        retry_config=Retry(total=0, raise_on_status=False, raise_on_redirect=False),
        timeout_ms=(5_000, 15_000),
    )


@dataclass(frozen=True)
class _Outbox:
    """One table of feedback rows with outbox columns."""

    table: Table
    key: str
    versioned: bool  # thumbs change after they sync; scores never do


THUMBS = _Outbox(FeedbackThumbs.__table__, THUMBS_KEY, versioned=True)  # type: ignore[arg-type]
SCORES = _Outbox(ReviewScore.__table__, QUALITY_KEY, versioned=False)  # type: ignore[arg-type]
OUTBOXES = (THUMBS, SCORES)


def sync_status(*, engine: Engine) -> dict[str, int]:
    """How many thumbs and scores are pending, synced, failed and local; "retrying" counts the
    pending ones that already failed at least once (waiting out a backoff)."""
    counts = {"pending": 0, "synced": 0, "failed": 0, "local": 0, "retrying": 0}
    with engine.connect() as connection:
        for box in OUTBOXES:
            count_sync_states(connection, box.table.c, counts)
    return counts


def sync_problems(*, engine: Engine, limit: int = 50) -> pd.DataFrame:
    """The items that failed or are waiting out a backoff, newest attempt first: which
    feedback, its run, how many attempts, the last error and when it is tried again."""
    columns = [
        "kind",
        "feedback_id",
        "run_id",
        "sync_state",
        "attempts",
        "last_error",
        "next_attempt_at",
    ]
    frames = []
    with engine.connect() as connection:
        for box in OUTBOXES:
            t = box.table.c
            rows = connection.execute(
                select(
                    t.feedback_uuid,
                    t.run_id,
                    t.sync_state,
                    t.attempts,
                    t.last_error,
                    t.next_attempt_at,
                )
                .where(
                    or_(t.sync_state == "failed", and_(t.sync_state == "pending", t.attempts > 0))
                )
                .order_by(t.next_attempt_at.desc())
                .limit(limit)
            ).all()
            frame = pd.DataFrame(rows, columns=columns[1:])
            frame.insert(0, "kind", box.key)
            frames.append(frame)
    found = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return found.sort_values("next_attempt_at", ascending=False, na_position="last").head(limit)


def retry_now(*, engine: Engine) -> int:
    """Make failed items and items waiting out a backoff due now, with a fresh round of
    attempts; how many were changed."""
    now = utcnow()
    changed = 0
    with engine.begin() as connection:
        for box in OUTBOXES:
            t = box.table.c
            waiting = and_(t.sync_state == "pending", t.next_attempt_at > now)
            result = connection.execute(
                update(box.table)
                .where(or_(t.sync_state == "failed", waiting))
                .values(sync_state="pending", next_attempt_at=now, attempts=0)
            )
            changed += result.rowcount
    return changed


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th transient failure: 2 s, 4 s, 8 s ... at most 10 min."""
    return timedelta(seconds=min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(attempts - 1, 0)))


def _status(error: BaseException) -> int | None:
    """The HTTP status behind a langsmith error (it raises its own types from inside the
    requests error that holds the response)."""
    seen: BaseException | None = error
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(seen, requests.HTTPError) and response is not None:
            return int(response.status_code)
        seen = seen.__cause__ or seen.__context__
    return None


def is_transient(error: BaseException) -> bool:
    """Worth retrying later: the service was unreachable, slow, rate limiting or failing."""
    if isinstance(
        error,
        (
            ls_utils.LangSmithConnectionError,
            ls_utils.LangSmithRequestTimeout,
            ls_utils.LangSmithRateLimitError,
            ls_utils.LangSmithAPIError,
            requests.ConnectionError,
            requests.Timeout,
        ),
    ):
        return True
    status = _status(error)
    return status is not None and (status in TRANSIENT_STATUS or status >= 500)


def _reason(error: BaseException) -> str:
    status = _status(error)
    text = " ".join(str(error).split()) or type(error).__name__
    prefix = f"HTTP {status}: " if status else ""
    return prefix + text[:MAX_ERROR_CHARS]


@dataclass(frozen=True)
class _Item:
    box: _Outbox
    id: int
    run_id: str
    score: int
    comment: str | None
    feedback_uuid: str
    remote: bool  # LangSmith already has this feedback id: update it
    version: int  # thumbs: the value's version when leased; scores: 0
    attempts: int  # failed attempts before this one


class SyncWorker(BackgroundWorker):
    """Pushes due outbox items to LangSmith every `interval_s` seconds on a daemon thread.

    Several workers (one per app replica) may run at once: each takes its items with a lease
    (an atomic update of next_attempt_at), so they push different items; were an item pushed
    twice anyway, it would still be one feedback in LangSmith, under its fixed id."""

    thread_name = "feedback-sync"

    def __init__(
        self,
        engine: Engine,
        client: Client,
        *,
        interval_s: float = 5.0,
        batch: int = 100,
        concurrency: int = 8,
        project_name: str | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.client = client
        self.interval_s = interval_s
        self.batch = batch
        self.concurrency = max(1, concurrency)
        self.project_name = project_name
        self._project_id: str | None = None

    # One pass -----------------------------------------------------------------------------

    def run_once(self) -> dict[str, int]:
        """Push every item due now, a batch at a time; counts of the items synced, waiting to
        retry and failed. A transient failure ends the pass: the service is unwell, and the
        untried items stay due for the next pass."""
        totals = {"synced": 0, "retrying": 0, "failed": 0}
        reasons: set[str] = set()
        while True:
            items = self._lease()
            if not items:
                break
            outcomes = self._push(items)
            self._record(outcomes)
            for _, outcome, reason in outcomes:
                if outcome in totals:
                    totals[outcome] += 1
                if reason:
                    reasons.add(reason)
            if any(outcome == "retrying" for _, outcome, _ in outcomes) or len(items) < self.batch:
                break
        observe_feedback_backlog(sync_status(engine=self.engine))
        if totals["retrying"] or totals["failed"]:
            log.warning(
                "feedback sync: %d synced, %d to retry, %d failed (%s)",
                totals["synced"],
                totals["retrying"],
                totals["failed"],
                "; ".join(sorted(reasons))[:300],
            )
        return totals

    def _lease(self) -> list[_Item]:
        now = utcnow()
        items: list[_Item] = []
        with self.engine.begin() as connection:
            for box in OUTBOXES:
                room = self.batch - len(items)
                if room <= 0:
                    break
                t = box.table.c
                due = and_(t.sync_state == "pending", t.next_attempt_at <= now)
                ids = select(t.id).where(due).order_by(t.next_attempt_at, t.id).limit(room)
                rows = connection.execute(
                    update(box.table)
                    .where(t.id.in_(ids.scalar_subquery()), due)
                    .values(next_attempt_at=now + timedelta(seconds=LEASE_S))
                    .returning(
                        t.id,
                        t.run_id,
                        t.score,
                        t.comment,
                        t.feedback_uuid,
                        t.synced_at,
                        t.attempts,
                        *([t.version] if box.versioned else []),
                    )
                ).all()
                items += [
                    _Item(
                        box=box,
                        id=int(r[0]),
                        run_id=str(r[1]),
                        score=int(r[2]),
                        comment=r[3],
                        feedback_uuid=str(r[4]),
                        remote=r[5] is not None,
                        attempts=int(r[6]),
                        version=int(r[7]) if box.versioned else 0,
                    )
                    for r in sorted(rows, key=lambda r: r[0])
                ]
        return items

    def _project(self) -> str | None:
        """The LangSmith project id our runs are traced to (feedback names it, or the API must
        look the run up), or None when it is unknown there. Looked up once; pushes running at
        the same moment may each look it up, which is harmless."""
        if self.project_name is None:
            return None
        if self._project_id is None:
            try:
                project = self.client.read_project(project_name=self.project_name)
            except ls_utils.LangSmithNotFoundError:
                return None
            self._project_id = str(project.id)
        return self._project_id

    def _send(self, item: _Item) -> None:
        comment = item.comment or ""  # "" clears a comment in an update; None would keep it
        if item.remote:
            try:
                self.client.update_feedback(item.feedback_uuid, score=item.score, comment=comment)
                return
            except ls_utils.LangSmithNotFoundError:
                pass  # deleted in LangSmith since: create it again under the same id
        try:
            self.client.create_feedback(
                item.run_id,
                key=item.box.key,
                score=item.score,
                comment=item.comment,
                feedback_id=item.feedback_uuid,
                session_id=self._project(),
                stop_after_attempt=1,
            )
        except ls_utils.LangSmithConflictError:
            # LangSmith has this id: an earlier create went through but its answer was lost.
            self.client.update_feedback(item.feedback_uuid, score=item.score, comment=comment)

    def _push(self, items: list[_Item]) -> list[tuple[_Item, str, str | None]]:
        """Send the items, `concurrency` at a time (LangSmith is a round trip away: one at a
        time, a backlog of 1,000 would take minutes). After a transient failure the items not
        yet sent are handed back at once instead of after their lease."""
        halt = threading.Event()

        def one(item: _Item) -> tuple[_Item, str, str | None]:
            if halt.is_set():
                return item, "released", None
            try:
                self._send(item)
            except Exception as error:
                if is_transient(error):
                    halt.set()
                    return item, "retrying", _reason(error)
                return item, "failed", _reason(error)
            return item, "synced", None

        if self.concurrency == 1:
            return [one(item) for item in items]
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="feedback-push") as pool:
            return list(pool.map(one, items))

    def _record(self, outcomes: list[tuple[_Item, str, str | None]]) -> None:
        now = utcnow()
        with self.engine.begin() as connection:
            for box in OUTBOXES:
                t = box.table.c
                mine = t.id == bindparam("b_id")
                # A thumb that changed while it was pushed is already due again with its new
                # value: leave that row to the next pass, only noting that LangSmith has its id.
                same = and_(mine, t.version == bindparam("b_version")) if box.versioned else mine
                statements = {
                    "synced": update(box.table)
                    .where(same)
                    .values(sync_state="synced", next_attempt_at=None, last_error=None),
                    "retrying": update(box.table)
                    .where(same)
                    .values(
                        attempts=bindparam("b_attempts"),
                        next_attempt_at=bindparam("b_next"),
                        last_error=bindparam("b_error"),
                    ),
                    "failed": update(box.table)
                    .where(same)
                    .values(
                        sync_state="failed",
                        attempts=bindparam("b_attempts"),
                        next_attempt_at=None,
                        last_error=bindparam("b_error"),
                    ),
                    "released": update(box.table)
                    .where(mine, t.sync_state == "pending")
                    .values(next_attempt_at=now),
                }
                params: dict[str, list[dict[str, Any]]] = {kind: [] for kind in statements}
                for item, outcome, error in outcomes:
                    if item.box is box:
                        params[outcome].append(
                            {
                                "b_id": item.id,
                                "b_version": item.version,
                                "b_attempts": item.attempts + 1,
                                "b_next": now + backoff(item.attempts + 1),
                                "b_error": error,
                            }
                        )
                if params["synced"]:
                    connection.execute(
                        update(box.table).where(mine).values(synced_at=now), params["synced"]
                    )
                for kind, statement in statements.items():
                    if params[kind]:
                        connection.execute(statement, params[kind])


def traced_run_ids(
    *, engine: Engine, start: datetime, end: datetime, limit: int = 1000
) -> list[str]:
    """Run ids of the assistant answers given in [start, end), newest first: what to ask
    LangSmith for feedback about."""
    query = (
        select(Message.run_id)
        .where(
            Message.role == "assistant",
            Message.run_id.is_not(None),
            Message.created_at >= start,
            Message.created_at < end,
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        return [str(r) for r in connection.execute(query).scalars()]


PULL_COLUMNS = [
    "feedback_id",
    "run_id",
    "key",
    "score",
    "value",
    "comment",
    "created_at",
    "source_type",
    "source",
]


def pull_feedback(
    *, client: Client, run_ids: Sequence[str], engine: Engine | None = None
) -> pd.DataFrame:
    """Feedback on our runs that other tools wrote in LangSmith (`list_feedback`), marked with
    source "langsmith": feedback_id, run_id, key, score, value, comment, created_at,
    source_type (LangSmith's: api, model, app ...), source. Feedback this app wrote (its ids
    are in our tables, read through `engine`) is left out. Raises langsmith's errors when
    LangSmith cannot be read."""
    wanted = list(dict.fromkeys(str(r) for r in run_ids))
    rows = []
    for index in range(0, len(wanted), CHUNK):
        for feedback in client.list_feedback(run_ids=wanted[index : index + CHUNK]):
            source = feedback.feedback_source
            rows.append(
                (
                    str(feedback.id),
                    None if feedback.run_id is None else str(feedback.run_id),
                    feedback.key,
                    feedback.score,
                    feedback.value,
                    feedback.comment,
                    feedback.created_at,
                    None if source is None else source.type,
                    "langsmith",
                )
            )
    frame = pd.DataFrame(rows, columns=PULL_COLUMNS)
    if engine is not None and not frame.empty:
        ours: set[str] = set()
        ids = list(frame["feedback_id"])
        with engine.connect() as connection:
            for box in OUTBOXES:
                t = box.table.c
                for index in range(0, len(ids), CHUNK):
                    chunk = ids[index : index + CHUNK]
                    query = select(t.feedback_uuid).where(t.feedback_uuid.in_(chunk))
                    ours.update(connection.execute(query).scalars())
        frame = frame[~frame["feedback_id"].isin(ours)].reset_index(drop=True)
    return frame
