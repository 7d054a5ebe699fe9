"""Tickets and escalations: opened by the agent in a chat turn, worked by staff on the Tickets
page (open -> in progress -> resolved, each change with who and a note in `ticket_history`), and
announced to the team's helpdesk through the webhook outbox (data/workers/ticket_webhook.py).

Every figure the Tickets page shows comes from a function here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, and_, func, insert, select, update

from data.config.service_times import ServiceLevels
from data.store.orm import utcnow
from data.store.orm_support import (
    TICKET_KINDS,
    TICKET_PRIORITIES,
    TICKET_STATUSES,
    SupportTicket,
    TicketHistory,
)

MAX_SUBJECT_CHARS = 200
MAX_BODY_CHARS = 4000
MAX_NOTE_CHARS = 2000
MAX_ACTOR_CHARS = 128
AGENT_ACTOR = "agent"
STATUS_LABELS = {"open": "open", "in_progress": "in progress", "resolved": "resolved"}
# Staff may move a ticket forward, take it back from "in progress", and reopen a resolved one.
TRANSITIONS = {
    "open": ("in_progress", "resolved"),
    "in_progress": ("open", "resolved"),
    "resolved": ("open",),
}


class TicketInputError(ValueError):
    """A status change that cannot be made as asked (the text says why); nothing was written."""


@dataclass(frozen=True, slots=True)
class Ticket:
    id: int
    user_id: str
    session_id: str
    turn: int
    kind: str
    subject: str
    body: str
    priority: str
    status: str
    created_at: datetime
    updated_at: datetime | None
    due_at: datetime | None
    webhook_uuid: str | None
    sync_state: str


def _ticket(row: Any) -> Ticket:
    return Ticket(
        id=int(row.id),
        user_id=row.user_id,
        session_id=row.session_id,
        turn=int(row.turn),
        kind=row.kind,
        subject=row.subject,
        body=row.body,
        priority=row.priority,
        status=row.status,
        created_at=row.created_at,
        updated_at=row.updated_at,
        due_at=row.due_at,
        webhook_uuid=row.webhook_uuid,
        sync_state=row.sync_state,
    )


def create_ticket(
    *,
    engine: Engine,
    user_id: str,
    session_id: str,
    turn: int,
    kind: str,
    subject: str,
    body: str,
    levels: ServiceLevels,
    notify: bool,
    priority: str = "normal",
    now: datetime | None = None,
) -> Ticket:
    """Open a ticket (or an escalation to a human), its first history row and, with `notify`,
    its webhook delivery (due at once), in one transaction; the ticket with its id and due
    time."""
    if kind not in TICKET_KINDS:
        raise ValueError(f"unknown ticket kind {kind!r}")
    if priority not in TICKET_PRIORITIES:
        raise ValueError(f"unknown priority {priority!r}")
    now = now or utcnow()
    row: dict[str, Any] = dict(
        user_id=user_id,
        session_id=session_id,
        turn=turn,
        kind=kind,
        subject=subject.strip()[:MAX_SUBJECT_CHARS],
        body=body.strip()[:MAX_BODY_CHARS],
        priority=priority,
        status="open",
        created_at=now,
        updated_at=now,
        due_at=levels.due(kind, now),
        webhook_uuid=str(uuid.uuid4()),
        sync_state="pending" if notify else "local",
        attempts=0,
        next_attempt_at=now if notify else None,
    )
    with engine.begin() as connection:
        ticket_id = int(
            connection.execute(insert(SupportTicket).returning(SupportTicket.id), row).scalar_one()
        )
        _history(
            connection,
            ticket_id,
            now,
            actor=AGENT_ACTOR,
            moved=(None, "open"),
            note=f"opened in conversation {session_id}, turn {turn}",
        )
    outbox = ("attempts", "next_attempt_at")
    return Ticket(id=ticket_id, **{k: v for k, v in row.items() if k not in outbox})


def _history(
    connection: Connection,
    ticket_id: int,
    at: datetime,
    *,
    actor: str,
    moved: tuple[str | None, str],
    note: str | None,
) -> None:
    """One line of a ticket's history: who moved it from which status to which, and why."""
    connection.execute(
        insert(TicketHistory).values(
            ticket_id=ticket_id,
            at=at,
            actor=actor,
            from_status=moved[0],
            to_status=moved[1],
            note=note or None,
        )
    )


def get_ticket(*, engine: Engine, ticket_id: int) -> Ticket | None:
    with engine.connect() as connection:
        row = connection.execute(select(SupportTicket).where(SupportTicket.id == ticket_id)).first()
    return _ticket(row) if row else None


def change_status(
    *,
    engine: Engine,
    ticket_id: int,
    to_status: str,
    actor: str,
    note: str,
    expected_status: str | None = None,
    now: datetime | None = None,
) -> Ticket:
    """Move a ticket to `to_status` and record who did it and why. With `expected_status`,
    the move is made only if nobody changed the ticket since the caller looked at it.
    Raises TicketInputError (nothing written) for a missing actor, a missing note when
    resolving, an unknown ticket or status, or a move TRANSITIONS does not allow."""
    actor = " ".join(actor.split())[:MAX_ACTOR_CHARS]
    note = note.strip()
    if not actor:
        raise TicketInputError("Enter your name in the sidebar first: changes are recorded.")
    if to_status not in TICKET_STATUSES:
        raise TicketInputError(f"Unknown status {to_status!r}.")
    if to_status == "resolved" and not note:
        raise TicketInputError("Say how it was resolved: a note is required.")
    if len(note) > MAX_NOTE_CHARS:
        raise TicketInputError(f"The note has {len(note):,} characters; the limit is 2,000.")
    now = now or utcnow()
    t = SupportTicket.__table__.c
    with engine.begin() as connection:
        current = connection.execute(select(t.status).where(t.id == ticket_id)).scalar_one_or_none()
        if current is None:
            raise TicketInputError(f"There is no ticket #{ticket_id}.")
        if expected_status is not None and current != expected_status:
            raise TicketInputError(
                f"Ticket #{ticket_id} is now {STATUS_LABELS[current]}: someone changed it "
                "meanwhile. Look at it again before changing it."
            )
        if to_status not in TRANSITIONS[current]:
            raise TicketInputError(
                f"Ticket #{ticket_id} is {STATUS_LABELS[current]}; it can go to "
                + " or ".join(STATUS_LABELS[s] for s in TRANSITIONS[current])
                + "."
            )
        moved = connection.execute(
            update(SupportTicket)
            .where(t.id == ticket_id, t.status == current)
            .values(status=to_status, updated_at=now)
        )
        if moved.rowcount != 1:  # changed between our read and our write
            raise TicketInputError(f"Ticket #{ticket_id} changed meanwhile; try again.")
        _history(connection, ticket_id, now, actor=actor, moved=(current, to_status), note=note)
        row = connection.execute(select(SupportTicket).where(t.id == ticket_id)).one()
    return _ticket(row)


def format_age(seconds: float) -> str:
    """ "5 min", "3 h 12 min", "2 d 4 h"."""
    minutes = max(0, int(seconds // 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


QUEUE_COLUMNS = [
    "id",
    "kind",
    "status",
    "priority",
    "customer",
    "conversation",
    "reason",
    "age",
    "age_hours",
    "created_at",
    "due_at",
    "overdue",
    "updated_at",
    "last_note",
    "webhook",
]


def ticket_queue(
    *,
    engine: Engine,
    now: datetime,
    statuses: tuple[str, ...] = ("open", "in_progress"),
    kinds: tuple[str, ...] = TICKET_KINDS,
    limit: int = 2000,
) -> pd.DataFrame:
    """Tickets in `statuses` and `kinds`, oldest first: who (customer), which conversation,
    the reason (subject), age at `now`, the response due time and whether it is overdue (not
    resolved and past due), the last staff note, and the webhook delivery state."""
    t = SupportTicket.__table__.c
    h = TicketHistory.__table__.c
    last = (
        select(h.ticket_id, func.max(h.id).label("last_id"))
        .where(h.note.is_not(None), h.actor != AGENT_ACTOR)
        .group_by(h.ticket_id)
        .subquery()
    )
    notes = select(h.id, h.note).subquery()
    query = (
        select(
            t.id,
            t.kind,
            t.status,
            t.priority,
            t.user_id,
            t.session_id,
            t.subject,
            t.created_at,
            t.due_at,
            t.updated_at,
            notes.c.note,
            t.sync_state,
        )
        .select_from(SupportTicket.__table__)
        .outerjoin(last, last.c.ticket_id == t.id)
        .outerjoin(notes, notes.c.id == last.c.last_id)
        .where(t.status.in_(statuses), t.kind.in_(kinds))
        .order_by(t.created_at, t.id)
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    records = []
    for r in rows:
        age_s = (now - r.created_at).total_seconds()
        records.append(
            {
                "id": int(r.id),
                "kind": r.kind,
                "status": STATUS_LABELS.get(r.status, r.status),
                "priority": r.priority,
                "customer": r.user_id,
                "conversation": r.session_id,
                "reason": r.subject,
                "age": format_age(age_s),
                "age_hours": round(age_s / 3600, 2),
                "created_at": r.created_at,
                "due_at": r.due_at,
                "overdue": bool(r.status != "resolved" and r.due_at is not None and r.due_at < now),
                "updated_at": r.updated_at,
                "last_note": r.note,
                "webhook": r.sync_state,
            }
        )
    return pd.DataFrame(records, columns=QUEUE_COLUMNS)


def ticket_counts(*, engine: Engine, now: datetime) -> dict[str, int]:
    """Tickets per status ("open", "in_progress", "resolved"), "overdue" (not resolved and past
    their due time) and "escalations_open" (escalations not resolved)."""
    t = SupportTicket.__table__.c
    counts = dict.fromkeys((*TICKET_STATUSES, "overdue", "escalations_open"), 0)
    unresolved = t.status != "resolved"
    with engine.connect() as connection:
        for status, count in connection.execute(select(t.status, func.count()).group_by(t.status)):
            counts[status] = int(count)
        counts["overdue"] = int(
            connection.execute(
                select(func.count()).where(and_(unresolved, t.due_at < now))
            ).scalar_one()
        )
        counts["escalations_open"] = int(
            connection.execute(
                select(func.count()).where(unresolved, t.kind == "escalation")
            ).scalar_one()
        )
    return counts


HISTORY_COLUMNS = ["at", "actor", "from_status", "to_status", "note"]


def ticket_history(*, engine: Engine, ticket_id: int) -> pd.DataFrame:
    """Every change of one ticket, oldest first."""
    h = TicketHistory.__table__.c
    query = (
        select(h.at, h.actor, h.from_status, h.to_status, h.note)
        .where(h.ticket_id == ticket_id)
        .order_by(h.at, h.id)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    label = STATUS_LABELS.get
    records = [
        (
            r.at,
            r.actor,
            label(r.from_status, r.from_status) if r.from_status else "",
            label(r.to_status, r.to_status),
            r.note,
        )
        for r in rows
    ]
    return pd.DataFrame(records, columns=HISTORY_COLUMNS, dtype=object)
