"""One conversation, as the analyst pages drill into it: transcript, per-turn usage, calls."""

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from data.conversations import get_session, session_calls
from data.sanitize import md, plain
from pages import charts, common

common.ensure_routed()
who = common.require("conversation")

st.title("Conversation")
# The last of repeated parameters wins; control characters and over-long ids are refused.
values = st.query_params.get_all("session")
session_id = plain(values[-1] if values else "").strip()
if len(session_id) > 128:
    st.warning("The session id in the address is longer than 128 characters; ignored.")
    session_id = ""
try:
    engine = common.engine()
    session = get_session(engine=engine, session_id=session_id) if session_id else None
except SQLAlchemyError as error:
    st.error(common.database_error(error))
    st.stop()

if session is None:
    if session_id:
        st.warning(f"There is no conversation with id {md(session_id)}.")
    st.info(
        "Open a conversation from the **Cost**, **Context** or **Latency** page (click a "
        "session or a slow call), or add `?session=` and the session id to the address.",
        icon=":material/info:",
    )
    st.stop()

calls = session_calls(engine=engine, session_id=session_id)
st.caption(
    f"Session {md(session.id)} · user {common.shown(session.user_id)} · started "
    f"{session.created_at:%Y-%m-%d %H:%M} UTC · {len(calls):,} model calls"
)
c1, c2, c3, c4 = st.columns(4)
priced = calls["cost_usd"].sum()
c1.metric("Cost (USD)", f"${priced:,.6f}", border=True)
c2.metric("Tokens", f"{int((calls['input_tokens'] + calls['output_tokens']).sum()):,}", border=True)
c3.metric(
    "Peak context", f"{calls['context_percent'].max():.1f}%" if len(calls) else "–", border=True
)
c4.metric("Summarizations", f"{int((calls['purpose'] == 'summarize').sum())}", border=True)

common.conversation(
    engine, session_id, folds=set(calls.loc[calls["purpose"] == "summarize", "turn"])
)

st.subheader("Model calls")
st.dataframe(calls, hide_index=True, width="stretch", column_config=charts.COLUMNS)
common.csv_download(calls, f"conversation_{session_id}")
