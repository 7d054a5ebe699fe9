"""Tickets and escalations for staff: the queue with customer, conversation, reason, age and due
time; moving a ticket open -> in progress -> resolved with a note (every change recorded); the
history; CSV; and the helpdesk webhook's backlog."""

from datetime import UTC, datetime

import pandas as pd
import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from data.config.service_times import describe_duration
from data.config.settings import get_settings
from data.integrations.tickets import (
    STATUS_LABELS,
    TRANSITIONS,
    TicketInputError,
    change_status,
    get_ticket,
    ticket_counts,
    ticket_history,
    ticket_queue,
)
from data.store.orm_support import TICKET_KINDS
from data.workers import ticket_webhook
from pages.ui import common, resources, signin, transcript

common.ensure_routed()
signin.require("tickets")

st.title("Tickets and escalations")
settings = get_settings()
levels = settings.service_levels()
st.caption(
    f"The agent promises an answer to a ticket within {describe_duration(levels.ticket)} and a "
    f"human for an escalation within {describe_duration(levels.escalation)} "
    f"(business hours {levels.hours.describe()})."
)

try:
    engine = common.engine()
    now = datetime.now(UTC)
    counts = ticket_counts(engine=engine, now=now)
except SQLAlchemyError as error:
    st.error(common.database_error(error))
    st.stop()
resources.ticket_webhook()
staff = signin.reviewer()

cards = st.columns(5)
cards[0].metric("Open", f"{counts['open']:,}")
cards[1].metric("In progress", f"{counts['in_progress']:,}")
cards[2].metric("Overdue", f"{counts['overdue']:,}", help="Not resolved and past the promised time")
cards[3].metric("Escalations waiting", f"{counts['escalations_open']:,}")
cards[4].metric("Resolved", f"{counts['resolved']:,}")

with st.container(horizontal=True):
    statuses = st.multiselect(
        "Status",
        list(STATUS_LABELS),
        default=["open", "in_progress"],
        format_func=STATUS_LABELS.__getitem__,
        key="t_status",
    )
    kinds = st.multiselect("Kind", list(TICKET_KINDS), default=list(TICKET_KINDS), key="t_kind")

queue = ticket_queue(engine=engine, now=now, statuses=tuple(statuses), kinds=tuple(kinds))
COLUMNS = {
    "id": st.column_config.NumberColumn("#", format="%d", width=40),
    "status": st.column_config.TextColumn("Status", width=85),
    "kind": st.column_config.TextColumn("Kind", width=80),
    "customer": st.column_config.TextColumn("Customer", width=85),
    "reason": st.column_config.TextColumn("Reason", width=240),
    "age": st.column_config.TextColumn("Age", width=80),
    "due_at": st.column_config.DatetimeColumn(
        "Due", format="ddd MMM D HH:mm", width=110, help=f"In {levels.hours.timezone}"
    ),
    "overdue": st.column_config.CheckboxColumn("Overdue", width=65),
    "conversation": st.column_config.TextColumn("Conversation", width=100),
    "priority": st.column_config.TextColumn("Priority", width=65),
    "last_note": st.column_config.TextColumn("Last note", width=170),
    "webhook": st.column_config.TextColumn("Helpdesk", width=70),
}


def _row_picked() -> None:
    """A click on a table row opens that ticket below."""
    rows = st.session_state["t_table"]["selection"]["rows"]
    ids = st.session_state.get("t_ids", [])
    if rows and rows[0] < len(ids):
        st.session_state["t_pick"] = ids[rows[0]]


if queue.empty:
    st.info(
        "No tickets match. The agent opens tickets and escalations from the chat "
        "(open_ticket, escalate_to_human); widen the status filter to see resolved ones.",
        icon=":material/inbox:",
    )
    picked_id = None
else:
    st.session_state["t_ids"] = ids = [int(i) for i in queue["id"]]
    shown = queue.drop(columns=["age_hours", "created_at", "updated_at"])
    shown["due_at"] = pd.to_datetime(shown["due_at"], utc=True).dt.tz_convert(levels.hours.zone)
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_config=COLUMNS,
        column_order=list(COLUMNS),
        on_select=_row_picked,
        selection_mode="single-row",
        key="t_table",
    )
    common.csv_download(queue, "tickets")
    labels = {
        int(r.id): f"#{r.id} · {r.kind} · {r.customer} · {r.reason[:60]}"
        for r in queue.itertuples()
    }
    if st.session_state.get("t_pick") not in labels:
        st.session_state["t_pick"] = None
    picked_id = st.selectbox(
        "Work on ticket",
        ids,
        format_func=labels.__getitem__,
        index=None,
        placeholder="Pick a ticket, or click its row in the table",
        key="t_pick",
    )

if picked_id is not None:
    ticket = get_ticket(engine=engine, ticket_id=picked_id)
    if ticket is not None:
        st.subheader(f"#{ticket.id} · {ticket.kind} · {STATUS_LABELS[ticket.status]}")
        left, right = st.columns([3, 2])
        with left:
            st.text(ticket.subject)  # the agent's words: text, not Markdown
            st.code(ticket.body, language=None, wrap_lines=True)
            if st.button("Open the conversation", icon=":material/forum:"):
                transcript.open_conversation(ticket.session_id)
        with right, st.form(f"t_move_{ticket.id}", border=True):
            choices = TRANSITIONS[ticket.status]
            to_status = st.radio(
                "Move to",
                choices,
                format_func=STATUS_LABELS.__getitem__,
                horizontal=True,
                key=f"t_to_{ticket.id}",
            )
            note = st.text_area(
                "Note",
                max_chars=2000,
                placeholder="What was done, for the record",
                key=f"t_note_{ticket.id}",
            )
            if st.form_submit_button("Save", icon=":material/save:", type="primary"):
                try:
                    moved = change_status(
                        engine=engine,
                        ticket_id=ticket.id,
                        to_status=to_status,
                        actor=staff or "",
                        note=note,
                        expected_status=ticket.status,
                    )
                except TicketInputError as error:
                    st.error(str(error), icon=":material/error:")
                else:
                    for key in (f"t_to_{ticket.id}", f"t_note_{ticket.id}"):
                        st.session_state.pop(key, None)  # the next change starts blank
                    st.toast(
                        f"Ticket #{moved.id} is now {STATUS_LABELS[moved.status]}.",
                        icon=":material/check:",
                    )
                    st.rerun()
        history = ticket_history(engine=engine, ticket_id=ticket.id)
        st.markdown("**History**")
        st.dataframe(
            history,
            hide_index=True,
            width="stretch",
            column_config={
                "at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm"),
                "actor": "Who",
                "from_status": "From",
                "to_status": "To",
                "note": st.column_config.TextColumn("Note", width="large"),
            },
        )
        common.csv_download(history, f"ticket_{ticket.id}_history", "Download history CSV")

st.divider()
st.subheader("Helpdesk webhook")
status = ticket_webhook.webhook_status(engine=engine)
if settings.ticket_webhook_url is None:
    st.caption(
        "Not configured: tickets stay on this page. Set TICKET_WEBHOOK_URL and "
        "TICKET_WEBHOOK_SECRET to send each new ticket and escalation to your helpdesk."
    )
hooks = st.columns(4)
for card, state, label in zip(
    hooks,
    ("pending", "synced", "failed", "local"),
    ("Waiting to send", "Delivered", "Failed", "Not sent (no webhook then)"),
    strict=True,
):
    card.metric(
        label,
        f"{status.get(state, 0):,}",
        help=f"{status['retrying']:,} of them wait out a backoff" if state == "pending" else None,
    )


def retry() -> None:
    st.session_state["t_retried"] = ticket_webhook.retry_now(engine=engine)
    if (worker := resources.ticket_webhook()) is not None:
        worker.resume()


if (retried := st.session_state.pop("t_retried", None)) is not None:
    st.toast(f"{retried:,} deliveries will be tried on the next pass.", icon=":material/sync:")
st.button(
    "Retry now",
    icon=":material/sync:",
    on_click=retry,
    disabled=settings.ticket_webhook_url is None,
    help="Send failed deliveries and those waiting out a backoff on the next pass.",
)
problems = ticket_webhook.webhook_problems(engine=engine)
if not problems.empty:
    st.markdown("**Failed and retrying deliveries**")
    st.dataframe(
        problems,
        hide_index=True,
        width="stretch",
        column_config={
            "ticket": st.column_config.NumberColumn("Ticket", format="%d"),
            "kind": "Kind",
            "sync_state": "State",
            "attempts": "Attempts",
            "last_error": st.column_config.TextColumn("Last error", width="large"),
            "next_attempt_at": st.column_config.DatetimeColumn(
                "Next attempt (UTC)", format="YYYY-MM-DD HH:mm:ss"
            ),
        },
    )
    common.csv_download(problems, "ticket_webhook_problems")
