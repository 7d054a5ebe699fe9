"""AppTest of the Tickets page on SQLite and Postgres: a ticket and an escalation the agent
opened in a chat turn are listed with their customer, conversation, reason and age, staff move
them with a note (recorded), the figures match the database, and the webhook delivers them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import Engine, delete, func, select, text
from streamlit.testing.v1 import AppTest

from agent.embedding_base import Embedder
from agent.knowledge import KnowledgeBase
from data.store.db import make_engine
from data.store.orm_support import SupportTicket, TicketHistory
from tests.helpers.fake_helpdesk import FakeHelpdesk
from tests.helpers.pages import run
from tests.helpers.servers import APP
from tests.helpers.support import SupportChat

SECRET = "page-test-secret"


@pytest.fixture
def page_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db_url: str
) -> Iterator[tuple[Engine, FakeHelpdesk]]:
    """The app's settings on this database with the webhook pointed at a local receiver; the
    Tickets page needs no chat model."""
    engine = make_engine(db_url)
    with engine.begin() as connection:
        connection.execute(delete(TicketHistory))
        connection.execute(delete(SupportTicket))
    with FakeHelpdesk(SECRET) as helpdesk:
        monkeypatch.setenv("DATABASE_URL", db_url)
        monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("METRICS_PORT", "0")
        monkeypatch.setenv("TICKET_WEBHOOK_URL", helpdesk.url)
        monkeypatch.setenv("TICKET_WEBHOOK_SECRET", SECRET)
        monkeypatch.setenv("TICKET_WEBHOOK_INTERVAL_S", "1")
        st.cache_resource.clear()
        st.cache_data.clear()
        yield engine, helpdesk
        st.cache_resource.clear()  # stops the page's webhook worker
        st.cache_data.clear()
    engine.dispose()


def tickets_page(staff: str | None = None) -> AppTest:
    at = run(AppTest.from_file(APP, default_timeout=60))
    at.switch_page("pages/tickets.py")
    run(at)
    assert at.title[0].value == "Tickets and escalations"
    if staff:
        at.sidebar.text_input(key="reviewer_input").set_value(staff)
        run(at)
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def button(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.label == label)


def test_the_agents_ticket_on_the_page_then_worked_and_delivered(
    page_env: tuple[Engine, FakeHelpdesk],
    tmp_path: Path,
    shared_embedder: Embedder,
    shared_knowledge: KnowledgeBase,
) -> None:
    engine, helpdesk = page_env
    chat = SupportChat(
        engine,
        tmp_path / "chat",
        embedder=shared_embedder,
        knowledge=shared_knowledge,
        ticket_webhook_url=helpdesk.url,
        ticket_webhook_secret=SECRET,
    )
    try:
        chat.say("kim", "s-kim", "The parcel A-10001 is crushed, please open a ticket")
        chat.say("kim", "s-kim", "I want to talk to a person")
    finally:
        chat.close()
    with engine.connect() as connection:
        ticket_id, escalation_id = connection.execute(
            select(SupportTicket.id).order_by(SupportTicket.id)
        ).scalars()

    at = tickets_page("sam")
    shown = at.dataframe[0].value
    assert shown["id"].tolist() == [ticket_id, escalation_id]
    assert shown["customer"].tolist() == ["kim", "kim"]
    assert shown["conversation"].tolist() == ["s-kim", "s-kim"]
    assert shown["reason"].tolist() == [
        "Damaged parcel A-10001",
        "Escalation: The customer asks for a person.",
    ]
    assert shown["kind"].tolist() == ["ticket", "escalation"]
    assert all(age.endswith(" min") for age in shown["age"])
    assert metrics(at)["Open"] == "2" and metrics(at)["Escalations waiting"] == "1"

    # The page's own worker delivers both to the helpdesk.
    deadline = time.monotonic() + 15
    while len(helpdesk.counts()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(helpdesk.counts().values()) == [1, 1]
    assert all(d.valid_signature for d in helpdesk.deliveries)
    run(at)
    assert metrics(at)["Delivered"] == "2" and metrics(at)["Waiting to send"] == "0"

    # Staff take the ticket, then resolve it; resolving needs a note.
    at.selectbox(key="t_pick").set_value(ticket_id)
    run(at)
    assert at.code[0].value == "The parcel A-10001 is crushed, please open a ticket"
    at.radio(key=f"t_to_{ticket_id}").set_value("in_progress")
    at.text_area(key=f"t_note_{ticket_id}").set_value("Asked the warehouse for photos.")
    button(at, "Save").click()
    run(at)
    at.selectbox(key="t_pick").set_value(ticket_id)
    run(at)
    at.radio(key=f"t_to_{ticket_id}").set_value("resolved")
    button(at, "Save").click()
    run(at)
    assert at.error[0].value == "Say how it was resolved: a note is required."
    at.text_area(key=f"t_note_{ticket_id}").set_value("Replacement shipped.")
    button(at, "Save").click()
    run(at)
    assert metrics(at)["Open"] == "1" and metrics(at)["Resolved"] == "1"
    assert at.dataframe[0].value["id"].tolist() == [escalation_id]  # resolved ones are hidden
    with engine.connect() as connection:
        history = connection.execute(
            select(TicketHistory.actor, TicketHistory.to_status, TicketHistory.note)
            .where(TicketHistory.ticket_id == ticket_id)
            .order_by(TicketHistory.id)
        ).all()
        open_count = connection.execute(
            select(func.count()).where(SupportTicket.status == "open")
        ).scalar_one()
    assert [tuple(h) for h in history] == [
        ("agent", "open", "opened in conversation s-kim, turn 1"),
        ("sam", "in_progress", "Asked the warehouse for photos."),
        ("sam", "resolved", "Replacement shipped."),
    ]
    assert metrics(at)["Open"] == str(open_count)
    # Resolved tickets come back with the filter, with their history.
    at.multiselect(key="t_status").set_value(["resolved"])
    run(at)
    at.selectbox(key="t_pick").set_value(ticket_id)
    run(at)
    assert at.dataframe[-1].value["note"].tolist()[-1] == "Replacement shipped."
    assert any(b.label == "Download CSV" for b in at.get("download_button"))


def test_an_empty_queue_says_what_to_do_and_nothing_is_changed_without_a_name(
    page_env: tuple[Engine, FakeHelpdesk],
) -> None:
    engine, _ = page_env
    at = tickets_page()
    assert "No tickets match" in at.info[0].value
    assert metrics(at)["Open"] == "0"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO support_tickets (user_id, session_id, turn, kind, subject, body,"
                " priority, status, created_at, sync_state, attempts)"
                " VALUES ('lee', 's-lee', 1, 'ticket', '<b>bold</b> subject', 'body', 'low',"
                " 'open', CURRENT_TIMESTAMP, 'local', 0)"
            )
        )
        ticket_id = connection.execute(select(func.max(SupportTicket.id))).scalar_one()
    run(at)
    at.selectbox(key="t_pick").set_value(ticket_id)
    run(at)
    assert any(t.value == "<b>bold</b> subject" for t in at.text)  # shown as text
    at.radio(key=f"t_to_{ticket_id}").set_value("in_progress")
    button(at, "Save").click()
    run(at)
    assert at.error[0].value == "Enter your name in the sidebar first: changes are recorded."
    with engine.connect() as connection:
        assert connection.execute(select(SupportTicket.status)).scalar_one() == "open"
