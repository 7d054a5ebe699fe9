"""One conversation, as the analyst pages drill into it: transcript, per-turn usage, calls."""

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from data.conversations import get_session, session_calls
from pages import charts, common

common.ensure_routed()

st.title("Conversation")
session_id = (st.query_params.get("session") or "").strip()
try:
    engine = common.engine()
    session = get_session(engine=engine, session_id=session_id) if session_id else None
except SQLAlchemyError as error:
    st.error(common.database_error(error))
    st.stop()

if session is None:
    if session_id:
        st.warning(f"There is no conversation with id {session_id!r}.")
    st.info(
        "Open a conversation from the **Cost**, **Context** or **Latency** page (click a "
        "session or a slow call), or put `?session=<id>` in the address.",
        icon=":material/info:",
    )
    st.stop()

calls = session_calls(engine=engine, session_id=session_id)
st.caption(
    f"Session `{session.id}` · user `{session.user_id}` · started "
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
