"""The audit log (admins): sign-ins and failures, scores, claims, assignments, exports, user
and role changes, price and budget changes, with filters and a CSV export."""

from datetime import UTC, date, datetime, time, timedelta

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from data.access import audit
from data.access.sanitize import plain
from pages.ui import common, signin

common.ensure_routed()
me = signin.require("audit")

st.title("Audit log")
try:
    engine = common.engine()
    actors, actions = audit.known(engine=engine)
except SQLAlchemyError as error:
    st.error(common.database_error(error))
    st.stop()

today = datetime.now(UTC).date()
with st.sidebar:
    st.subheader("Filters")
    picked = st.date_input(
        "From – to (UTC days)",
        (today - timedelta(days=7), today),
        min_value=date(2000, 1, 1),
        max_value=today,
        key="audit_days",
    )
    actor = st.selectbox("Actor", actors, index=None, placeholder="Everyone", key="audit_actor")
    chosen = st.multiselect("Actions", actions, placeholder="All actions", key="audit_actions")
    target = plain(st.text_input("Target contains", max_chars=128, key="audit_target")).strip()

days = list(picked) if isinstance(picked, (list, tuple)) else [picked]
first, last = (days[0], days[-1]) if days else (today, today)
query = audit.AuditQuery(
    start=datetime.combine(first, time(), UTC),
    end=datetime.combine(last + timedelta(days=1), time(), UTC),
    actor=actor,
    actions=tuple(chosen),
    target=target or None,
)
found = audit.entries(engine=engine, query=query)
st.caption(
    f"{len(found):,} entries from {first} to {last} (UTC), newest first"
    + (f"; the newest {query.limit:,} are shown" if len(found) == query.limit else "")
    + ". The log is append-only: the database refuses to change or delete an entry."
)
if found.empty:
    st.info("No entries match: widen the days or clear a filter.", icon=":material/info:")
    st.stop()
st.dataframe(
    found,
    hide_index=True,
    width="stretch",
    column_config={
        "id": st.column_config.NumberColumn("Id"),
        "ts": st.column_config.DatetimeColumn("Time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "actor": "Actor",
        "action": "Action",
        "target": "Target",
        "detail": "Detail",
    },
)
common.csv_download(found, "audit_log")
