"""The ticket webhook outbox: each new ticket and escalation is POSTed to the team's helpdesk
(`TICKET_WEBHOOK_URL`), signed with HMAC-SHA256 (`TICKET_WEBHOOK_SECRET`).

Like the LangSmith feedback outbox (data/workers/langsmith_sync.py): the ticket row is written
first, with a delivery id fixed at that moment and sync state "pending"; a background worker leases
due rows (an atomic update of next_attempt_at, so several app replicas push different rows),
POSTs each with its id and marks it "synced". Connection errors, timeouts, 408/425/429 and 5xx
back off (2 s, 4 s, ... at most 10 min) and pause the worker until then (deliveries go in ticket
order, so while the receiver is down one delivery probes it per backoff); any other answer marks
the delivery "failed" with the reason until "Retry now". The body of a delivery is the same on
every attempt, so a receiver that keeps the ids it has seen gets each ticket exactly once even
if an acknowledgement was lost.

What the receiver gets (docs/agent.md shows it too):

    POST {TICKET_WEBHOOK_URL}
    Content-Type: application/json
    X-Webhook-Id: <delivery id, a UUID; the same on every retry>
    X-Webhook-Event: ticket.created | escalation.created
    X-Webhook-Timestamp: <unix seconds of this attempt>
    X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>

    {"id": ..., "event": ..., "ticket": {"id", "kind", "subject", "body", "priority",
     "status", "customer", "conversation", "turn", "created_at", "due_at"}}

Answer any 2xx (or 409 for an id you already have) to acknowledge."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pandas as pd
from sqlalchemy import Engine, and_, bindparam, or_, select, update

from data.config.settings import Settings
from data.store.orm import utcnow
from data.store.orm_support import SupportTicket
from data.workers.base import BackgroundWorker, count_sync_states

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Webhook-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
ID_HEADER = "X-Webhook-Id"
EVENT_HEADER = "X-Webhook-Event"
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 600.0
LEASE_S = 120.0
TRANSIENT_STATUS = {408, 425, 429}
MAX_ERROR_CHARS = 500
# A receiver should refuse a signature older than this (a replayed request).
MAX_SIGNATURE_AGE_S = 300


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The X-Webhook-Signature value of one attempt."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(
    secret: bytes,
    *,
    timestamp: str,
    body: bytes,
    signature: str,
    now: float | None = None,
    max_age_s: float = MAX_SIGNATURE_AGE_S,
) -> bool:
    """What a receiver checks: the signature matches (constant-time) and is recent."""
    try:
        age = (time.time() if now is None else now) - int(timestamp)
    except ValueError:
        return False
    if abs(age) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def backoff(attempts: int, base_s: float = BACKOFF_BASE_S) -> timedelta:
    """The wait after the `attempts`-th transient failure: 2 s, 4 s, 8 s ... at most 10 min."""
    return timedelta(seconds=min(BACKOFF_MAX_S, base_s * 2 ** max(attempts - 1, 0)))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True)
class _Delivery:
    ticket_id: int
    delivery_id: str
    event: str
    body: bytes
    attempts: int


def _body(row: Any) -> tuple[str, bytes]:
    event = f"{row.kind}.created"
    payload = {
        "id": row.webhook_uuid,
        "event": event,
        "ticket": {
            "id": int(row.id),
            "kind": row.kind,
            "subject": row.subject,
            "body": row.body,
            "priority": row.priority,
            "status": "open",  # the state it was announced in
            "customer": row.user_id,
            "conversation": row.session_id,
            "turn": int(row.turn),
            "created_at": _iso(row.created_at),
            "due_at": _iso(row.due_at),
        },
    }
    return event, json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def webhook_status(*, engine: Engine) -> dict[str, int]:
    """Deliveries pending, synced, failed and local (no webhook when the ticket was opened);
    "retrying" counts the pending ones that already failed at least once."""
    counts = {"pending": 0, "synced": 0, "failed": 0, "local": 0, "retrying": 0}
    with engine.connect() as connection:
        count_sync_states(connection, SupportTicket.__table__.c, counts)
    return counts


PROBLEM_COLUMNS = ["ticket", "kind", "sync_state", "attempts", "last_error", "next_attempt_at"]


def webhook_problems(*, engine: Engine, limit: int = 50) -> pd.DataFrame:
    """Deliveries that failed or wait out a backoff, latest first, with their last error."""
    t = SupportTicket.__table__.c
    query = (
        select(t.id, t.kind, t.sync_state, t.attempts, t.last_error, t.next_attempt_at)
        .where(or_(t.sync_state == "failed", and_(t.sync_state == "pending", t.attempts > 0)))
        .order_by(t.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=PROBLEM_COLUMNS)


def retry_now(*, engine: Engine) -> int:
    """Failed deliveries and those waiting out a backoff become due now with a fresh round of
    attempts; how many were changed."""
    now = utcnow()
    t = SupportTicket.__table__.c
    waiting = and_(t.sync_state == "pending", t.next_attempt_at > now)
    with engine.begin() as connection:
        result = connection.execute(
            update(SupportTicket)
            .where(or_(t.sync_state == "failed", waiting))
            .values(sync_state="pending", next_attempt_at=now, attempts=0)
        )
    return int(result.rowcount)


class WebhookWorker(BackgroundWorker):
    """Pushes due ticket deliveries every `interval_s` seconds on a daemon thread."""

    thread_name = "ticket-webhook"

    def __init__(
        self,
        engine: Engine,
        *,
        url: str,
        secret: bytes,
        interval_s: float = 5.0,
        timeout_s: float = 10.0,
        batch: int = 50,
        backoff_base_s: float = BACKOFF_BASE_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.url = url
        self.secret = secret
        self.interval_s = interval_s
        self.batch = batch
        self.backoff_base_s = backoff_base_s
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            headers={"User-Agent": "agent-chatbase-ticket-webhook"},
            transport=transport,
        )
        self._paused_until = 0.0  # monotonic; after a transient failure the receiver rests

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self.client.close()

    # One pass -----------------------------------------------------------------------------

    def run_once(self) -> dict[str, int]:
        """Deliver everything due now, a batch at a time; counts synced, retrying, failed.
        A transient failure ends the pass and hands the untried rows back."""
        totals = {"synced": 0, "retrying": 0, "failed": 0}
        if time.monotonic() < self._paused_until:
            return totals
        while True:
            leased = self._lease()
            if not leased:
                break
            outcomes = self._push(leased)
            self._record(outcomes)
            for _, outcome, _ in outcomes:
                if outcome in totals:
                    totals[outcome] += 1
            if any(o == "retrying" for _, o, _ in outcomes) or len(leased) < self.batch:
                break
        if totals["retrying"] or totals["failed"]:
            log.warning(
                "ticket webhook: %d delivered, %d to retry, %d failed",
                totals["synced"],
                totals["retrying"],
                totals["failed"],
            )
        return totals

    def _lease(self) -> list[_Delivery]:
        now = utcnow()
        t = SupportTicket.__table__.c
        due = and_(t.sync_state == "pending", t.next_attempt_at <= now)
        ids = select(t.id).where(due).order_by(t.next_attempt_at, t.id).limit(self.batch)
        with self.engine.begin() as connection:
            rows = connection.execute(
                update(SupportTicket)
                .where(t.id.in_(ids.scalar_subquery()), due)
                .values(next_attempt_at=now + timedelta(seconds=LEASE_S))
                .returning(
                    t.id,
                    t.webhook_uuid,
                    t.kind,
                    t.subject,
                    t.body,
                    t.priority,
                    t.user_id,
                    t.session_id,
                    t.turn,
                    t.created_at,
                    t.due_at,
                    t.attempts,
                )
            ).all()
        deliveries = []
        for row in sorted(rows, key=lambda r: r.id):
            event, body = _body(row)
            deliveries.append(
                _Delivery(int(row.id), str(row.webhook_uuid), event, body, int(row.attempts))
            )
        return deliveries

    def _send(self, delivery: _Delivery) -> tuple[str, str | None]:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            ID_HEADER: delivery.delivery_id,
            EVENT_HEADER: delivery.event,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, delivery.body),
        }
        try:
            response = self.client.post(self.url, content=delivery.body, headers=headers)
        except httpx.TimeoutException:
            return "retrying", "the receiver did not answer in time"
        except httpx.HTTPError as error:
            return "retrying", f"the receiver is unreachable ({type(error).__name__})"
        status = response.status_code
        if 200 <= status < 300 or status == 409:  # 409: the receiver already has this id
            return "synced", None
        reason = f"HTTP {status}: {' '.join(response.text.split())}"[:MAX_ERROR_CHARS]
        if status in TRANSIENT_STATUS or status >= 500:
            return "retrying", reason
        return "failed", reason

    def _push(self, deliveries: list[_Delivery]) -> list[tuple[_Delivery, str, str | None]]:
        outcomes: list[tuple[_Delivery, str, str | None]] = []
        halted = False
        for delivery in deliveries:
            if halted:
                outcomes.append((delivery, "released", None))
                continue
            outcome, reason = self._send(delivery)
            outcomes.append((delivery, outcome, reason))
            if outcome == "retrying":
                halted = True
                wait = backoff(delivery.attempts + 1, self.backoff_base_s).total_seconds()
                self._paused_until = time.monotonic() + wait
        return outcomes

    def _record(self, outcomes: list[tuple[_Delivery, str, str | None]]) -> None:
        now = utcnow()
        t = SupportTicket.__table__.c
        mine = t.id == bindparam("b_id")
        statements = {
            "synced": update(SupportTicket)
            .where(mine)
            .values(sync_state="synced", synced_at=now, next_attempt_at=None, last_error=None),
            "retrying": update(SupportTicket)
            .where(mine)
            .values(
                attempts=bindparam("b_attempts"),
                next_attempt_at=bindparam("b_next"),
                last_error=bindparam("b_error"),
            ),
            "failed": update(SupportTicket)
            .where(mine)
            .values(
                sync_state="failed",
                attempts=bindparam("b_attempts"),
                next_attempt_at=None,
                last_error=bindparam("b_error"),
            ),
            "released": update(SupportTicket)
            .where(mine, t.sync_state == "pending")
            .values(next_attempt_at=now),
        }
        params: dict[str, list[dict[str, Any]]] = {kind: [] for kind in statements}
        for delivery, outcome, error in outcomes:
            params[outcome].append(
                {
                    "b_id": delivery.ticket_id,
                    "b_attempts": delivery.attempts + 1,
                    "b_next": now + backoff(delivery.attempts + 1, self.backoff_base_s),
                    "b_error": error,
                }
            )
        with self.engine.begin() as connection:
            for kind, statement in statements.items():
                if params[kind]:
                    connection.execute(statement, params[kind])

    def resume(self) -> None:
        """Stop resting after a transient failure: the next pass sends (Retry now)."""
        self._paused_until = 0.0


def worker_from_settings(settings: Settings, *, engine: Engine) -> WebhookWorker | None:
    """The worker the app starts when TICKET_WEBHOOK_URL is set (settings require the secret)."""
    if settings.ticket_webhook_url is None or settings.ticket_webhook_secret is None:
        return None
    return WebhookWorker(
        engine,
        url=str(settings.ticket_webhook_url),
        secret=settings.ticket_webhook_secret.get_secret_value().encode(),
        interval_s=settings.ticket_webhook_interval_s,
    )
