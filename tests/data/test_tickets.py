"""Tickets and escalations on SQLite and Postgres: due times in business hours (against a
minute-by-minute count), staff status changes with their history, the queue figures against
pandas on the raw rows, and the signed webhook outbox against a local receiver (down while 200
tickets are opened; all arrive exactly once after it recovers)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, delete, func, select

from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase
from data.config.service_times import (
    BusinessHours,
    ServiceLevels,
    parse_business_hours,
    parse_duration,
)
from data.config.settings import SettingsError, load_settings
from data.integrations.tickets import (
    TicketInputError,
    change_status,
    create_ticket,
    format_age,
    get_ticket,
    ticket_counts,
    ticket_history,
    ticket_queue,
)
from data.store.orm_support import SupportTicket, TicketHistory
from data.workers.ticket_webhook import (
    WebhookWorker,
    retry_now,
    sign,
    verify,
    webhook_problems,
    webhook_status,
    worker_from_settings,
)
from tests.helpers.fake_helpdesk import FakeHelpdesk
from tests.helpers.support import SupportChat

SECRET = "whsec-test-0123456789"
HOURS = BusinessHours("Mon-Fri 08:00-20:00, Sat 09:00-17:00", "America/New_York")
LEVELS = ServiceLevels(ticket=timedelta(hours=12), escalation=timedelta(hours=4), hours=HOURS)


@pytest.fixture
def db(engine: Engine) -> Engine:
    with engine.begin() as connection:
        connection.execute(delete(TicketHistory))
        connection.execute(delete(SupportTicket))
    return engine


def open_ticket(engine: Engine, n: int = 0, *, notify: bool = False, **kwargs: object) -> int:
    fields: dict[str, object] = {
        "user_id": f"cust-{n % 7}",
        "session_id": f"s-{n}",
        "turn": 1 + n % 3,
        "kind": "escalation" if n % 5 == 0 else "ticket",
        "subject": f"Parcel A-{10000 + n} damaged",
        "body": f"The box for A-{10000 + n} arrived crushed.",
        "priority": "high" if n % 2 else "normal",
    } | kwargs
    return create_ticket(engine=engine, levels=LEVELS, notify=notify, **fields).id  # type: ignore[arg-type]


# -- service times -----------------------------------------------------------------------------


def minute_by_minute(start: datetime, minutes: int) -> datetime:
    """The due time by walking one minute at a time and counting the minutes inside hours."""
    zone = HOURS.zone
    windows = parse_business_hours(HOURS.spec)
    cursor = start.astimezone(UTC).replace(second=0, microsecond=0)
    counted = 0
    while counted < minutes:
        local = cursor.astimezone(zone)
        if any(a <= local.time() < b for a, b in windows.get(local.weekday(), [])):
            counted += 1
        cursor += timedelta(minutes=1)
    return cursor


def test_due_times_count_only_business_hours() -> None:
    rng = random.Random(14)
    # Around both 2026 daylight-saving changes in New York and an ordinary week.
    bases = [datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 10, 29, tzinfo=UTC)]
    bases.append(datetime(2026, 12, 1, tzinfo=UTC))
    for _ in range(60):
        start = rng.choice(bases) + timedelta(minutes=rng.randrange(0, 7 * 24 * 60))
        minutes = rng.choice([1, 30, 240, 720, 1500])
        assert HOURS.add(start, timedelta(minutes=minutes)) == minute_by_minute(start, minutes)
    # Friday 19:30 New York + 4 working hours: 30 min on Friday, 3.5 h on Saturday.
    friday = datetime(2026, 12, 4, 19, 30, tzinfo=HOURS.zone)
    due = LEVELS.due("escalation", friday).astimezone(HOURS.zone)
    assert (due.weekday(), due.hour, due.minute) == (5, 12, 30)
    assert LEVELS.promise("escalation", friday) == (
        "within 4 working hours, by Sat 5 Dec 12:30 EST "
        "(business hours Mon-Fri 08:00-20:00, Sat 09:00-17:00 America/New_York)"
    )


def test_service_time_settings_are_checked() -> None:
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2") == timedelta(hours=2)
    settings = load_settings(ticket_response_time="6h", escalation_response_time="45m")
    assert (
        settings.service_levels()
        .promise("ticket", datetime(2026, 12, 1, 14, 0, tzinfo=UTC))
        .startswith("within 6 working hours, by Tue 1 Dec 15:00 EST")
    )
    for name, value, message in (
        ("ticket_response_time", "soon", "is not a duration"),
        ("business_hours", "weekdays 9 to 5", "is not like 'Mon-Fri 08:00-20:00'"),
        ("business_hours", "Mon 10:00-09:00", "the window ends before it starts"),
        ("business_timezone", "Mars/Olympus", "is not a time zone"),
    ):
        with pytest.raises(SettingsError, match=message):
            load_settings(**{name: value})
    with pytest.raises(SettingsError, match="TICKET_WEBHOOK_URL needs TICKET_WEBHOOK_SECRET"):
        load_settings(ticket_webhook_url="http://127.0.0.1:9/hook")
    with pytest.raises(SettingsError) as raised:
        load_settings(ticket_webhook_url="not a url", ticket_webhook_secret=SECRET)
    assert SECRET not in str(raised.value)


# -- staff changes and their history ----------------------------------------------------------


def test_staff_move_a_ticket_and_every_change_is_recorded(db: Engine) -> None:
    opened_at = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    ticket_id = open_ticket(db, 1, now=opened_at)
    ticket = get_ticket(engine=db, ticket_id=ticket_id)
    assert ticket is not None
    assert (ticket.status, ticket.sync_state) == ("open", "local")
    assert ticket.due_at == LEVELS.due("ticket", opened_at)
    later = opened_at + timedelta(hours=1)
    change_status(
        engine=db,
        ticket_id=ticket_id,
        to_status="in_progress",
        actor=" Rita  M ",
        note="",
        now=later,
    )
    for bad, message in (
        (dict(to_status="resolved", actor="rita", note=" "), "a note is required"),
        (dict(to_status="resolved", actor="", note="done"), "Enter your name"),
        (dict(to_status="closed", actor="rita", note="done"), "Unknown status"),
        (
            dict(to_status="resolved", actor="rita", note="x", expected_status="open"),
            "someone changed it",
        ),
    ):
        with pytest.raises(TicketInputError, match=message):
            change_status(engine=db, ticket_id=ticket_id, **bad)  # type: ignore[arg-type]
    with pytest.raises(TicketInputError, match="There is no ticket #999999"):
        change_status(engine=db, ticket_id=999999, to_status="resolved", actor="r", note="x")
    resolved = change_status(
        engine=db,
        ticket_id=ticket_id,
        to_status="resolved",
        actor="rita",
        note="Replacement sent, UPS 1Z999.",
        expected_status="in_progress",
        now=later + timedelta(minutes=30),
    )
    assert (resolved.status, resolved.updated_at) == ("resolved", later + timedelta(minutes=30))
    with pytest.raises(TicketInputError, match="it can go to open"):
        change_status(engine=db, ticket_id=ticket_id, to_status="in_progress", actor="r", note="")
    history = ticket_history(engine=db, ticket_id=ticket_id)
    assert history[["actor", "from_status", "to_status", "note"]].values.tolist() == [
        ["agent", "", "open", "opened in conversation s-1, turn 2"],
        ["Rita M", "open", "in progress", None],
        ["rita", "in progress", "resolved", "Replacement sent, UPS 1Z999."],
    ]


def test_the_queue_and_counts_match_the_raw_rows(db: Engine) -> None:
    base = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
    ids = [open_ticket(db, n, now=base + timedelta(minutes=37 * n)) for n in range(24)]
    for n, ticket_id in enumerate(ids):
        if n % 3 == 1:
            change_status(
                engine=db,
                ticket_id=ticket_id,
                to_status="in_progress",
                actor="sam",
                note=f"looking {n}",
            )
        if n % 4 == 2:
            change_status(
                engine=db, ticket_id=ticket_id, to_status="resolved", actor="sam", note=f"fixed {n}"
            )
    now = base + timedelta(hours=20)
    with db.connect() as connection:
        raw = pd.DataFrame(connection.execute(select(SupportTicket.__table__)).mappings().all())
        notes = pd.DataFrame(connection.execute(select(TicketHistory.__table__)).mappings().all())
    raw["created_at"] = pd.to_datetime(raw["created_at"], utc=True)
    raw["due_at"] = pd.to_datetime(raw["due_at"], utc=True)
    staff = notes[(notes["actor"] != "agent") & notes["note"].notna()].sort_values("id")
    last_note = staff.groupby("ticket_id")["note"].last()
    unresolved = raw[raw["status"] != "resolved"].sort_values(["created_at", "id"])

    queue = ticket_queue(engine=db, now=now)
    assert queue["id"].tolist() == unresolved["id"].tolist()
    expected_age = ((pd.Timestamp(now) - unresolved["created_at"]).dt.total_seconds() / 3600).round(
        2
    )
    assert queue["age_hours"].tolist() == expected_age.tolist()
    assert queue["overdue"].tolist() == (unresolved["due_at"] < pd.Timestamp(now)).tolist()
    assert queue["last_note"].fillna("").tolist() == [
        last_note.get(i, "") for i in unresolved["id"]
    ]
    assert set(queue["status"]) == {"open", "in progress"}
    counts = ticket_counts(engine=db, now=now)
    assert counts["open"] == int((raw["status"] == "open").sum())
    assert counts["in_progress"] == int((raw["status"] == "in_progress").sum())
    assert counts["resolved"] == int((raw["status"] == "resolved").sum())
    assert counts["overdue"] == int(
        ((raw["status"] != "resolved") & (raw["due_at"] < pd.Timestamp(now))).sum()
    )
    assert counts["escalations_open"] == int(
        ((raw["status"] != "resolved") & (raw["kind"] == "escalation")).sum()
    )
    escalations = ticket_queue(
        engine=db, now=now, statuses=("open", "in_progress", "resolved"), kinds=("escalation",)
    )
    assert (
        escalations["id"].tolist()
        == raw[raw["kind"] == "escalation"].sort_values("id")["id"].tolist()
    )
    assert format_age(59) == "0 min" and format_age(3 * 3600 + 720) == "3 h 12 min"
    assert format_age(2 * 86400 + 4 * 3600) == "2 d 4 h"


# -- the webhook outbox ------------------------------------------------------------------------


def test_signatures() -> None:
    body = b'{"id":"x"}'
    signature = sign(SECRET.encode(), "1764590400", body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify(
        SECRET.encode(), timestamp="1764590400", body=body, signature=signature, now=1764590500
    )
    assert not verify(
        b"other", timestamp="1764590400", body=body, signature=signature, now=1764590500
    )
    assert not verify(
        SECRET.encode(),
        timestamp="1764590400",
        body=body + b" ",
        signature=signature,
        now=1764590500,
    )
    # A replayed request, an hour later.
    assert not verify(
        SECRET.encode(), timestamp="1764590400", body=body, signature=signature, now=1764594000
    )


def wait_for(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout} s")


def test_200_tickets_opened_while_the_receiver_is_down_arrive_exactly_once(db: Engine) -> None:
    helpdesk = FakeHelpdesk(SECRET)  # not listening yet
    settings = load_settings(ticket_webhook_url=helpdesk.url, ticket_webhook_secret=SECRET)
    ids: list[int] = []
    writers = [
        threading.Thread(
            target=lambda k=k: ids.extend(open_ticket(db, n, notify=True) for n in range(k, 200, 4))
        )
        for k in range(4)
    ]
    for writer in writers:
        writer.start()
    workers = []
    for _ in range(2):  # two app replicas
        worker = worker_from_settings(settings, engine=db)
        assert worker is not None
        worker.interval_s, worker.backoff_base_s = 0.05, 0.2
        workers.append(worker.start())
    try:
        for writer in writers:
            writer.join()
        assert len(ids) == 200
        wait_for(lambda: webhook_status(engine=db)["retrying"] >= 2, 10)
        status = webhook_status(engine=db)
        assert status["pending"] == 200 and status["synced"] == 0
        problems = webhook_problems(engine=db)
        assert problems["last_error"].str.contains("the receiver is unreachable").all()
        helpdesk.up()
        wait_for(lambda: webhook_status(engine=db)["synced"] == 200, 30)
    finally:
        for worker in workers:
            worker.stop()
        helpdesk.down()
    counts = helpdesk.counts()
    assert len(counts) == 200 and set(counts.values()) == {1}
    assert all(d.valid_signature for d in helpdesk.deliveries)
    with db.connect() as connection:
        rows = {r.webhook_uuid: r for r in connection.execute(select(SupportTicket.__table__))}
    assert set(counts) == set(rows)
    for delivery in helpdesk.deliveries:
        payload = delivery.payload
        row = rows[delivery.delivery_id]
        assert payload["id"] == delivery.delivery_id
        assert delivery.event == payload["event"] == f"{row.kind}.created"
        ticket = payload["ticket"]
        assert (ticket["id"], ticket["customer"], ticket["conversation"]) == (
            row.id,
            row.user_id,
            row.session_id,
        )
        assert (ticket["subject"], ticket["priority"], ticket["status"]) == (
            row.subject,
            row.priority,
            "open",
        )
        assert datetime.fromisoformat(ticket["due_at"]) == row.due_at
    assert webhook_problems(engine=db).empty


def test_rejections_fail_with_the_reason_until_retry_now(db: Engine) -> None:
    with FakeHelpdesk(SECRET) as helpdesk:
        first, second, third = (open_ticket(db, n, notify=True) for n in (1, 2, 3))
        local = open_ticket(db, 4, notify=False)
        worker = WebhookWorker(db, url=helpdesk.url, secret=SECRET.encode(), backoff_base_s=60)
        helpdesk.fail_next = [400, 409, 503]
        assert worker.run_once() == {"synced": 1, "retrying": 1, "failed": 1}
        status = webhook_status(engine=db)
        assert (status["failed"], status["synced"], status["pending"], status["local"]) == (
            1,
            1,
            1,
            1,
        )
        problems = webhook_problems(engine=db).set_index("ticket")
        assert problems.loc[first, "last_error"].startswith("HTTP 400: ")
        assert problems.loc[third, "last_error"].startswith("HTTP 503: ")
        assert second not in problems.index and local not in problems.index
        # Backing off: the worker rests, the row waits a minute.
        assert worker.run_once() == {"synced": 0, "retrying": 0, "failed": 0}
        assert retry_now(engine=db) == 2
        worker.resume()
        assert worker.run_once()["synced"] == 2
        assert webhook_status(engine=db)["synced"] == 3
        worker.stop()
    # 409 means the receiver already had it: acknowledged, not delivered twice.
    assert sorted(helpdesk.counts().values()) == [1, 1]


def test_a_ticket_the_agent_opens_reaches_the_webhook(
    db: Engine, tmp_path: Path, shared_embedder: Embedder, shared_knowledge: KnowledgeBase
) -> None:
    with FakeHelpdesk(SECRET) as helpdesk:
        chat = SupportChat(
            db,
            tmp_path / "data",
            embedder=shared_embedder,
            knowledge=shared_knowledge,
            ticket_webhook_url=helpdesk.url,
            ticket_webhook_secret=SECRET,
            escalation_response_time="2h",
        )
        try:
            answer = chat.say(
                "kim", "s-kim", "My parcel A-10001 is crushed, please open a ticket"
            ).text
            escalated = chat.say("kim", "s-kim", "I want to talk to a person").text
        finally:
            chat.close()
        worker = worker_from_settings(chat.settings, engine=db)
        assert worker is not None
        assert worker.run_once()["synced"] == 2
        worker.stop()
    with db.connect() as connection:
        ticket, escalation = connection.execute(
            select(SupportTicket).order_by(SupportTicket.id)
        ).all()
        assert connection.execute(select(func.count()).select_from(TicketHistory)).scalar_one() == 2
    levels = chat.settings.service_levels()
    assert answer == (
        f"[success] Ticket #{ticket.id} is open (priority normal). The support team will answer "
        f"the customer by e-mail {levels.promise('ticket', ticket.created_at)}."
    )
    assert escalated.startswith(f"[success] Escalation #{escalation.id} is open.")
    assert "within 2 working hours" in escalated
    assert escalation.body.startswith("The customer asks for a person.\n\nRecent conversation:")
    got = {d.payload["ticket"]["id"]: d for d in helpdesk.deliveries}
    assert set(got) == {ticket.id, escalation.id}
    assert (
        got[ticket.id].event == "ticket.created"
        and got[escalation.id].event == "escalation.created"
    )
    assert got[ticket.id].payload["ticket"]["subject"] == "Damaged parcel A-10001"
    assert all(d.valid_signature for d in helpdesk.deliveries)
    assert json.loads(got[ticket.id].body)["ticket"]["customer"] == "kim"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables yet (the migration test walks the revisions itself)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.sqlite3'}"
        return
    from tests.helpers.db import fresh_postgres

    with fresh_postgres("acb_mig", migrate=False) as url:
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)


def test_migration_0007_keeps_the_tickets_opened_before_it(empty_db_url: str) -> None:
    from sqlalchemy import text

    from data.store.db import make_engine
    from data.store.migrate import downgrade, upgrade

    engine = make_engine(empty_db_url)

    def migrate(revision: str, *, down: bool = False) -> None:
        (downgrade if down else upgrade)(empty_db_url, revision)

    migrate("0006")
    with engine.begin() as connection:
        for n in range(3):
            connection.execute(
                text(
                    "INSERT INTO support_tickets (user_id, session_id, turn, kind, subject, body,"
                    " priority, status, created_at) VALUES (:u, 's', 1, 'ticket', 'old', 'b',"
                    " 'normal', 'open', :at)"
                ),
                {"u": f"u{n}", "at": datetime(2026, 11, 1, 12, n, tzinfo=UTC)},
            )
    migrate("0007")
    with engine.connect() as connection:
        rows = connection.execute(select(SupportTicket).order_by(SupportTicket.id)).all()
    assert len({r.webhook_uuid for r in rows}) == 3 and all(r.webhook_uuid for r in rows)
    assert {r.sync_state for r in rows} == {"local"}  # never announced, not sent now
    assert [r.updated_at for r in rows] == [r.created_at for r in rows]
    assert webhook_status(engine=engine)["pending"] == 0
    change_status(engine=engine, ticket_id=rows[0].id, to_status="resolved", actor="a", note="n")
    migrate("0006", down=True)
    migrate("head")
    engine.dispose()


def test_migration_0012_gives_earlier_thumbs_their_answer_time_and_model(
    empty_db_url: str,
) -> None:
    from sqlalchemy import insert, text

    from data.store.db import make_engine
    from data.store.migrate import upgrade
    from data.store.orm import ChatSession, Message, ModelCall
    from data.store.orm_team import FeedbackThumbs

    engine = make_engine(empty_db_url)

    def migrate(revision: str) -> None:
        upgrade(empty_db_url, revision)

    migrate("0009")
    answered = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    with engine.begin() as connection:
        connection.execute(insert(ChatSession), [{"id": "s", "user_id": "u"}])
        connection.execute(
            insert(Message),
            [
                {
                    "session_id": "s",
                    "turn": turn,
                    "role": "assistant",
                    "content": "a",
                    "created_at": answered + timedelta(minutes=turn),
                }
                for turn in (1, 2)
            ],
        )
        # Turn 1: the primary model failed, the fallback answered; turn 2: no successful call.
        connection.execute(
            insert(ModelCall),
            [
                {
                    "ts": answered + timedelta(minutes=minute),
                    "user_id": "u",
                    "session_id": "s",
                    "turn": turn,
                    "purpose": "chat",
                    "provider": "openai",
                    "model": model,
                    "cost_status": "unknown",
                    "latency_ms": 1.0,
                    "context_tokens": 1,
                    "context_window": 100,
                    "status": status,
                }
                for turn, model, status, minute in (
                    (1, "primary", "error", 0),
                    (1, "fallback", "ok", 1),
                    (2, "primary", "error", 2),
                )
            ],
        )
        for turn in (1, 2):
            connection.execute(
                text(
                    "INSERT INTO feedback_thumbs (message_id, session_id, turn, user_id, score, "
                    "created_at, updated_at, version, feedback_uuid, sync_state, attempts) "
                    "SELECT id, 's', turn, 'u', 1, created_at, created_at, 1, :uuid, 'local', 0 "
                    "FROM messages WHERE turn = :turn"
                ),
                {"turn": turn, "uuid": f"00000000-0000-0000-0000-00000000000{turn}"},
            )
    migrate("head")
    with engine.connect() as connection:
        rows = connection.execute(select(FeedbackThumbs).order_by(FeedbackThumbs.turn)).all()
    assert [r.chat_model for r in rows] == ["fallback", None]
    assert [r.answered_at for r in rows] == [answered + timedelta(minutes=t) for t in (1, 2)]
    engine.dispose()
