"""Chat with the support agent: streaming answers, sessions you can resume, usage per answer."""

import uuid

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from agent.local_server import LocalModelError
from agent.models import ModelConfigError
from agent.service import ChatInputError, DependencyError, TurnOutcome
from data.conversations import list_sessions, transcript, turn_events, turn_stats
from pages import common

common.ensure_routed()

NEW = "__new__"


st.title("Support chat")

try:
    engine = common.engine()
except SQLAlchemyError as error:
    st.error(common.database_error(error))
    st.stop()

if "pending_session" in st.session_state:
    st.session_state["session_choice"] = st.session_state.pop("pending_session")

with st.sidebar:
    user_id = st.text_input(
        "User id",
        value="guest",
        max_chars=128,
        key="user_id",
        help="Who is chatting. Sessions are listed per user.",
    ).strip()
    sessions = list_sessions(engine=engine, user_id=user_id) if user_id else []
    labels = {NEW: "+ New session"}
    labels |= {
        s.id: f"{s.title or 'untitled'} · {s.updated_at:%Y-%m-%d %H:%M} · {s.turns} turns"
        for s in sessions
    }
    if st.session_state.get("session_choice") not in labels:
        st.session_state["session_choice"] = NEW
    choice = st.selectbox(
        "Session", list(labels), format_func=labels.__getitem__, key="session_choice"
    )

if not user_id:
    st.info("Enter a user id in the sidebar to start chatting.")
    st.stop()

if choice == NEW:
    session_id = st.session_state.setdefault("new_session_id", uuid.uuid4().hex)
    st.caption("A new session. Say hello to the support agent.")
else:
    session_id = choice
    st.caption(f"Session `{session_id}`")

stats = turn_stats(engine=engine, session_id=session_id)
events = turn_events(engine=engine, session_id=session_id)
for message in transcript(engine=engine, session_id=session_id):
    with st.chat_message(message.role):
        st.markdown(message.content)
        if message.role == "assistant":
            st.caption(common.turn_caption(stats.get(message.turn)))
            common.turn_details(events.get(message.turn))

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

prompt = st.chat_input("Ask the support agent…", max_chars=8000)
if prompt:
    with st.chat_message("user"):
        st.markdown(prompt)
    with st.chat_message("assistant"):
        try:
            outcome = TurnOutcome(session_id=session_id)
            st.write_stream(
                service.stream_turn(
                    user_id=user_id, session_id=session_id, message=prompt, outcome=outcome
                )
            )
        except ChatInputError as error:
            st.warning(str(error))
            st.stop()
        except DependencyError as error:
            st.error(str(error))
            st.stop()
    st.session_state["pending_session"] = session_id
    st.session_state.pop("new_session_id", None)
    st.rerun()
