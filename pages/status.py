"""Status: each dependency (configured, reachable, latency, version, last error), maintenance
runs, and the seed's operating procedure linked to where the app shows each item."""

import pandas as pd
import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from data.access.sanitize import md
from data.config.settings import get_settings
from data.config.urls import redact_url
from data.store.maintain import last_runs
from data.store.orm_team import MAINTENANCE_TASKS
from data.workers import operating_procedure, status
from data.workflows.outcomes import judge_status
from pages.ui import common, signin

common.ensure_routed()
signin.require("status")
TTL = 15


@st.cache_data(ttl=TTL, max_entries=4, show_spinner="Checking the dependencies…")
def _checks(_settings_key: str) -> dict[str, status.Check]:
    return status.check_all(get_settings(), engine=common.engine())


st.title("Status")
settings = get_settings()
if st.button("Check again", icon=":material/refresh:"):
    _checks.clear()
checks = _checks(settings.model_dump_json())
failing = status.not_ready_reasons(checks)
if failing:
    st.error("Not ready: " + "; ".join(failing), icon=":material/error:")
else:
    st.success("Ready: every dependency the agent needs answered.", icon=":material/check_circle:")
degraded = status.not_ready_reasons(checks, required=False)
if degraded:
    st.warning(
        "Working without: " + "; ".join(degraded) + ". The app keeps running; what needs "
        "these (live metrics, LangSmith sync, error reports) waits until they answer.",
        icon=":material/warning:",
    )
checked = next((c.checked_at for c in checks.values() if c.checked_at), None)
st.caption(
    f"Checked {checked:%Y-%m-%d %H:%M:%S} UTC, each within {settings.status_check_timeout_s:g} s"
    " (results are kept for 15 s). Database, Qdrant, the model endpoint and Redis are what "
    "/ready checks; credentials are never shown."
    if checked
    else "Nothing checked yet."
)
table = status.checks_frame(checks)
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        "dependency": "Dependency",
        "configured": "Configured",
        "reachable": "Reachable",
        "latency_ms": st.column_config.NumberColumn("Latency (ms)", format="%.1f"),
        "version": "Version",
        "target": "Checked at",
        "error": st.column_config.TextColumn("Error now", width="large"),
        "last_error": st.column_config.TextColumn("Last error", width="large"),
        "last_error_at": st.column_config.DatetimeColumn("Last error at (UTC)"),
    },
)
common.csv_download(table, "status")

st.subheader("Maintenance")
try:
    runs = last_runs(engine=common.engine())
except Exception as error:  # the database is named as failing above; keep the page
    runs = {}
    st.warning(
        f"Maintenance runs are unavailable: {type(error).__name__}", icon=":material/warning:"
    )
if runs:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "task": task,
                    "started": runs[task].started_at,
                    "status": runs[task].status,
                    "rows": runs[task].rows,
                    "detail": runs[task].detail or "",
                }
                for task in MAINTENANCE_TASKS
                if task in runs
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "task": "Task",
            "started": st.column_config.DatetimeColumn("Last run (UTC)"),
            "status": "Status",
            "rows": st.column_config.NumberColumn("Rows", format="%d"),
            "detail": "Detail",
        },
    )
missing = [t for t in MAINTENANCE_TASKS if t not in runs]
if missing:
    st.info(
        f"Never run here: {', '.join(missing)}. Run `python -m data.store.maintain` weekly "
        "(partitions ahead, retention, ANALYZE, VACUUM) and "
        "`python -m data.store.backup create FILE` then "
        "`python -m data.store.backup check FILE` monthly; docs/operations.md has "
        "the schedule.",
        icon=":material/info:",
    )

st.subheader("Outcome judge")
try:
    judge = judge_status(engine=common.engine())
except SQLAlchemyError:  # the database is named as failing above; keep the page
    judge = None
if judge is not None:
    c1, c2, c3 = st.columns(3)
    c1.metric(
        "Ended, waiting for a verdict",
        f"{judge.pending:,}",
        border=True,
        help="Oldest found "
        + (f"{judge.oldest_pending:%Y-%m-%d %H:%M} UTC" if judge.oldest_pending else "–"),
    )
    c2.metric("Verdicts, last 24 h", f"{judge.day_verdicts:,}", border=True)
    c3.metric(
        "Unjudged, last 24 h",
        f"{judge.day_unjudged:,}",
        border=True,
        help="The judge failed twice on these; the newest reason is below.",
    )
    st.caption(
        f"Judge: {settings.judge_model or settings.summary_model or settings.chat_model} "
        f"(JUDGE_MODEL; the embedded model in zero mode) · a conversation ends after "
        f"{settings.conversation_idle_minutes} min without a message · "
        f"{100 * settings.judge_sample_rate:g} % of them judged · worker "
        + ("on" if settings.outcome_worker else "off in this process (OUTCOME_WORKER)")
        + (
            f" · last verdict {judge.last_verdict_at:%Y-%m-%d %H:%M} UTC"
            if judge.last_verdict_at
            else ""
        )
    )
    if judge.last_error:
        st.warning(f"Newest unjudged: {md(judge.last_error)}", icon=":material/rule:")

st.subheader("Operating procedure")
grafana = redact_url(settings.grafana_url) if settings.grafana_url else None
for cadence in ("Daily", "Weekly", "Monthly"):
    st.markdown(f"**{cadence}**")
    for item in (i for i in operating_procedure.SOP if i.cadence == cadence):
        left, right = st.columns([2, 3])
        with left:
            if item.kind == "page":
                st.page_link(item.where, label=item.task, icon=":material/arrow_forward:")
            elif item.kind == "grafana" and grafana:
                st.link_button(item.task, grafana, icon=":material/monitoring:")
            elif item.kind == "grafana":
                st.text(f"{item.task}: set GRAFANA_URL to link Grafana")
            else:
                st.text(item.task)
                st.code(item.where, language="bash")
        with right:
            st.caption(item.how)
