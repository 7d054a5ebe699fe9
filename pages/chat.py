"""Chat with the support agent: streaming answers, sessions you can resume, usage per answer,
and thumbs with an optional comment under every answer."""

import uuid

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from agent.budget import BudgetExceeded
from agent.local_server import LocalModelError
from agent.models import ModelConfigError
from agent.service import ChatInputError, DependencyError, TurnFailed, TurnOutcome
from data.conversations import TranscriptMessage, list_sessions
from data.feedback import MAX_COMMENT_CHARS, FeedbackInputError, set_thumbs, thumbs_for_session
from data.sanitize import md
from data.settings import get_settings
from pages import common

common.ensure_routed()
who = common.require("chat")

NEW = "__new__"


st.title("Support chat")

try:
    engine = common.engine()
except SQLAlchemyError as error:
    st.error(common.database_error(error))
    st.stop()

if "pending_session" in st.session_state:
    st.session_state["active_session"] = st.session_state.pop("pending_session")

with st.sidebar:
    if who.source == "local":  # single-user local mode: any customer id, for trying the agent
        user_id = st.text_input(
            "User id",
            value="guest",
            max_chars=128,
            key="user_id",
            help="Who is chatting. Sessions are listed per user.",
        ).strip()
    else:  # signed in: staff chat as themselves and see only their own sessions
        user_id = who.username
    sessions = list_sessions(engine=engine, user_id=user_id) if user_id else []
    labels = {NEW: "+ New session"}
    labels |= {
        s.id: f"{s.title or 'untitled'} · {s.updated_at:%Y-%m-%d %H:%M} · {s.turns} turns"
        for s in sessions
    }
    # This page's conversation is ours to keep (`active_session`), not the widget's: a
    # selectbox remembers a position, and when someone else starts a session the list
    # grows and that position points at another conversation. The widget's key follows the
    # list, so a new list shows a fresh widget on our choice; only the user changes it.
    options = list(labels)
    active = st.session_state.get("active_session", NEW)
    if active not in labels:
        active = NEW
    picked = st.selectbox(
        "Session",
        options,
        index=options.index(active),
        format_func=labels.__getitem__,
        key=f"session_choice-{hash(tuple(options))}",
    )
    st.session_state["active_session"] = choice = picked

if not user_id:
    st.info("Enter a user id in the sidebar to start chatting.")
    st.stop()

if choice == NEW:
    session_id = st.session_state.setdefault("new_session_id", uuid.uuid4().hex)
    st.caption("A new session. Say hello to the support agent.")
else:
    session_id = choice
    st.caption(f"Session {md(session_id)}")

common.feedback_sync()
common.ticket_webhook()  # tickets the agent opens here are sent to the helpdesk, if configured
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


common.conversation(engine, session_id, footer=thumbs, mask=False)

try:
    # Built once per process; with the embedded model this starts its server if needed.
    runtime = common.runtime()
    service = runtime.service
except (LocalModelError, ModelConfigError) as error:
    st.error(f"The chat model is unavailable: {error}")
    st.stop()
if runtime.parts.memory_error:
    st.warning(
        f"Long-term memory is off: {runtime.parts.memory_error}. The agent answers without it.",
        icon=":material/warning:",
    )

for warning in st.session_state.pop("budget_warnings", []):
    st.warning(warning, icon=":material/savings:")

prompt = st.chat_input("Ask the support agent…", max_chars=8000)
if prompt:
    with st.chat_message("user"):
        st.markdown(md(prompt))
    with st.chat_message("assistant"):
        try:
            outcome = TurnOutcome(session_id=session_id)
            # Escaped chunk by chunk, so the streamed answer is shown as text too.
            st.write_stream(
                md(chunk)
                for chunk in service.stream_turn(
                    user_id=user_id, session_id=session_id, message=prompt, outcome=outcome
                )
            )
        except BudgetExceeded as error:
            st.error(error.message, icon=":material/block:")
            st.stop()
        except ChatInputError as error:
            st.warning(str(error))  # the service's own messages (no user text in them)
            st.stop()
        except (DependencyError, TurnFailed) as error:
            st.error(str(error))
            st.stop()
    st.session_state["budget_warnings"] = outcome.warnings
    st.session_state["pending_session"] = session_id
    st.session_state.pop("new_session_id", None)
    st.rerun()
