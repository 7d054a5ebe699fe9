"""Chat with the support agent: streaming answers, sessions you can resume, usage per answer,
and thumbs with an optional comment under every answer."""

import uuid

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from agent.live_turn import LiveTurn, Notice
from agent.local_server import LocalModelError
from agent.models import ModelConfigError
from agent.runtime import Runtime
from agent.service import ChatInputError, ChatService, clean_message
from data.access.sanitize import md
from data.config.settings import get_settings
from data.store.conversations import TranscriptMessage, list_sessions
from data.store.feedback import (
    MAX_COMMENT_CHARS,
    FeedbackInputError,
    set_thumbs,
    thumbs_for_session,
)
from data.workflows.outcomes import close_session
from pages.ui import common, resources, signin, transcript

common.ensure_routed()
who = signin.require("chat")

NEW = "__new__"
# This page's own state (st.session_state is per browser tab):
ACTIVE = "chat_active"  # the conversation this tab shows: a session id, or NEW
OWNER = "chat_owner"  # the user id ACTIVE belongs to
FRESH = "chat_fresh"  # the id this tab gives the next conversation it starts
LIVE = "chat_live"  # the LiveTurn answering this tab's last message, until it is collected
QUEUE = "chat_queue"  # messages that arrived while one was being answered: [(session, text)]
NOTICE = "chat_notice"  # what the last turn ended with (a Notice), shown once
PICKER = "chat_session_choice"
CHOICES = "chat_choices"  # the ids the picker offered
ICONS = {"info": ":material/info:", "warning": ":material/warning:", "error": ":material/error:"}


def _picked() -> None:
    """The session picker's own change: the only way this tab's conversation changes. The
    picker reports the label picked; a label the list no longer holds changes nothing."""
    picked = st.session_state[PICKER]
    if picked in st.session_state.get(CHOICES, ()):
        st.session_state[ACTIVE] = picked


def _end(session_id: str, user_id: str) -> None:
    """ "End conversation": the conversation is closed (judged on the worker's next pass) and
    this tab starts a new one."""
    try:
        closed = close_session(engine=common.engine(), session_id=session_id, user_id=user_id)
    except SQLAlchemyError as error:
        st.session_state[NOTICE] = Notice("error", common.database_error(error))
        return
    if closed is not None:
        st.session_state[ACTIVE] = NEW
        st.session_state[NOTICE] = Notice(
            "info", "Conversation ended. Write again in it from the Session list to reopen it."
        )


def _stop() -> None:
    if (live := st.session_state.get(LIVE)) is not None:
        live.stop()


def collect() -> LiveTurn | None:
    """This tab's live turn, or None: an ended one is collected here (its notice and budget
    warnings kept for this run)."""
    live: LiveTurn | None = st.session_state.get(LIVE)
    if live is not None and live.collect():
        del st.session_state[LIVE]
        if live.notice is not None:
            st.session_state[NOTICE] = live.notice
        st.session_state["budget_warnings"] = live.outcome.warnings
        return None
    return live


def start_queued(service: ChatService, user_id: str) -> LiveTurn | None:
    """Start the next queued message when no turn of this tab is live."""
    live: LiveTurn | None = st.session_state.get(LIVE)
    queue = st.session_state.setdefault(QUEUE, [])
    if live is None and queue:
        session_id, text = queue.pop(0)
        live = st.session_state[LIVE] = LiveTurn(user_id, session_id, text).start(service)
    return live


st.title("Support chat")

try:
    engine = common.engine()
except SQLAlchemyError as error:
    st.error(common.database_error(error))
    st.stop()

try:
    # Built once per process; with the embedded model this starts its server if needed.
    runtime: Runtime | None = resources.runtime()
    model_error = ""
except (LocalModelError, ModelConfigError) as error:
    runtime, model_error = None, f"The chat model is unavailable: {error}"
service = runtime.service if runtime is not None else None
live = collect()
busy = live is not None or bool(st.session_state.get(QUEUE))

with st.sidebar:
    if who.source == "local":  # single-user local mode: any customer id, for trying the agent
        user_id = st.text_input(
            "User id",
            value="guest",
            max_chars=128,
            key="user_id",
            help="Who is chatting. Sessions are listed per user.",
            disabled=busy,
        ).strip()
    else:  # signed in: staff chat as themselves and see only their own sessions
        user_id = who.username
    sessions = list_sessions(engine=engine, user_id=user_id) if user_id else []
    labels = {NEW: "+ New session"}
    # A picker's value travels as its label, so each label is unique (the id's start) and
    # stable: with the turn count or the last activity in it, a label changed whenever
    # another tab chatted, and a pick made on the old list fell on another conversation.
    labels |= {
        s.id: f"{s.title or 'untitled'} · {s.created_at:%Y-%m-%d %H:%M} · {s.id[:6]}"
        for s in sessions
    }
    # The tab's conversation is ours to keep (ACTIVE), not the widget's: other tabs of the same
    # user add and reorder sessions at any time, so the picker is set from ACTIVE on every run
    # and only its own change (on_change) writes ACTIVE back.
    if st.session_state.get(OWNER) != user_id:  # another user id typed in: their own list
        st.session_state[OWNER] = user_id
        st.session_state[ACTIVE] = NEW
    active = st.session_state.get(ACTIVE, NEW)
    if active not in labels:  # just started here and not stored yet, or older than the list
        labels[active] = "This conversation"
    st.session_state[PICKER] = active
    st.session_state[CHOICES] = frozenset(labels)
    st.selectbox(
        "Session",
        list(labels),
        format_func=labels.__getitem__,
        key=PICKER,
        on_change=_picked,
        disabled=busy,
        help="Your conversations, newest first. This tab stays on its own conversation "
        "whatever your other tabs do.",
    )

if not user_id:
    st.info("Enter a user id in the sidebar to start chatting.")
    st.stop()

if service is not None:
    live = start_queued(service, user_id)

# Read before anything is drawn; the box is pinned to the bottom wherever it is called. It is
# off while an answer is coming and while the model is unavailable: the answer runs on its
# own thread (LiveTurn), so a click elsewhere on the page no longer cuts it off, and a second
# message waits in the queue instead of racing it.
prompt = st.chat_input(
    "Wait for the answer, or press Stop answering…" if busy else "Ask the support agent…",
    max_chars=8000,
    disabled=busy or service is None,
    key="chat_prompt",
)
if prompt and service is not None:
    try:
        clean_message(prompt)  # a blank message is refused here, before anything starts
    except ChatInputError as error:
        st.session_state[NOTICE] = Notice("warning", str(error))
    else:
        if active == NEW:  # this tab starts a conversation: it follows it, and only it does
            active = st.session_state.pop(FRESH, None) or uuid.uuid4().hex
            st.session_state[ACTIVE] = active
        st.session_state.setdefault(QUEUE, []).append((active, prompt))
        start_queued(service, user_id)
        st.rerun()  # the next run shows the input off and the Stop control

if active == NEW:
    session_id = st.session_state.setdefault(FRESH, uuid.uuid4().hex)
    st.caption("A new session. Say hello to the support agent.")
else:
    session_id = active
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption(f"Session {md(session_id)}")
        st.button(
            "End conversation",
            icon=":material/check_circle:",
            type="tertiary",
            disabled=busy,
            on_click=_end,
            args=(session_id, user_id),
            help="Done here? Ending the conversation lets the team see whether it was solved. "
            "It also ends by itself after a while without messages.",
        )

resources.feedback_sync()
resources.outcome_worker()  # ended conversations are judged in the background
resources.ticket_webhook()  # tickets the agent opens here are sent to the helpdesk, if configured
stored = thumbs_for_session(engine=engine, session_id=session_id)


def thumbs(message: TranscriptMessage) -> None:
    """Thumbs and an optional comment under an answer, saved as soon as they change (the
    latest wins); a comment is kept when the thumbs change."""
    saved = stored.get(message.id)
    with st.container(horizontal=True, vertical_alignment="center"):
        value = st.feedback(
            "thumbs", key=f"fb-{message.id}", default=None if saved is None else saved.score
        )
        with (
            st.popover(
                "Comment" if saved is None or not saved.comment else "Edit comment",
                icon=":material/comment:",
                type="tertiary",
                help="Tell the team what was good or wrong with this answer.",
            ),
            st.form(f"fbf-{message.id}", border=False),
        ):
            comment = st.text_area(
                "What was good or wrong with this answer?",
                value=(saved.comment or "") if saved else "",
                key=f"fbc-{message.id}",
                max_chars=MAX_COMMENT_CHARS,
            )
            sent = st.form_submit_button("Save comment", icon=":material/save:")
    kept = saved.comment if saved else None
    if sent:
        if value is None:
            st.warning("Choose thumbs up or down first, then save the comment.")
            return
        kept = comment.strip() or None
    elif value is None or (saved is not None and value == saved.score):
        return
    try:
        stored[message.id] = set_thumbs(
            engine=engine,
            message_id=message.id,
            user_id=user_id,
            score=value,
            comment=kept,
            sync_enabled=get_settings().langsmith_feedback_enabled,
        )
    except FeedbackInputError as error:
        st.error(md(error), icon=":material/error:")
        return
    st.toast("Thanks: your feedback is saved.", icon=":material/thumb_up:")


# The live turn's own messages are drawn below as they stream, not from the database.
transcript.conversation(
    engine, session_id, footer=thumbs, mask=False, before=live.created if live else None
)

if runtime is None:
    st.error(model_error)
    st.stop()
if runtime.parts.memory_error:
    st.warning(
        f"Long-term memory is off: {runtime.parts.memory_error}. The agent answers without it.",
        icon=":material/warning:",
    )

for warning in st.session_state.pop("budget_warnings", []):
    st.warning(warning, icon=":material/savings:")
if (notice := st.session_state.pop(NOTICE, None)) is not None:
    getattr(st, notice.kind)(notice.text, icon=ICONS[notice.kind])

if live is not None and live.session_id != session_id:  # not reachable: the picker is off
    st.caption("An answer is still coming in another conversation of this tab.")
elif live is not None:
    with st.chat_message("user"):
        st.markdown(md(live.message))
    with st.chat_message("assistant"):
        if not live.stopping:
            st.button(
                "Stop answering", icon=":material/stop_circle:", on_click=_stop, type="tertiary"
            )
        # Escaped chunk by chunk, so the streamed answer is shown as text too.
        st.write_stream(md(chunk) for chunk in live.follow())
        if not live.done:  # stopped: it ends at the model's next chunk
            with st.spinner("Stopping…"):
                live.wait(timeout=runtime.service.model_timeout_s)
    st.rerun()  # the next run collects the turn and shows it as stored
