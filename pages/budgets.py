"""Budgets: admins add, change and remove spending limits per user, per user-id prefix (a team)
or for everyone, per UTC day or calendar month, and see each change that was made. The agent
checks them before every model call (agent/budget.py)."""

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from data.workflows import budgets
from data.workflows.budget_rules import DEFAULT_WARN_FRACTION, BudgetInputError
from pages.ui import budget_section, common, signin

common.ensure_routed()
signin.require("budgets")

SCOPES = {"all": "Everyone", "prefix": "Users whose id starts with…", "user": "One user"}
PERIODS = {"day": "UTC day", "month": "Calendar month (UTC)"}

st.title("Budgets")
st.caption(
    "A turn that would take a budget past its limit is refused before any model call; past "
    "the warning threshold the answer carries a warning. Every change here is recorded."
)
try:
    engine = common.engine()
    current = budgets.list_budgets(engine=engine)
except SQLAlchemyError as error:
    st.error(common.database_error(error))
    st.stop()
actor = signin.reviewer()
if not actor:
    st.info("Enter your name in the sidebar: budget changes are recorded under it.")

with st.expander("Add a budget", icon=":material/add:", expanded=not current):
    with st.form("add_budget", border=False):
        kind = st.radio(
            "Scope", list(SCOPES), format_func=SCOPES.__getitem__, horizontal=True, key="b_kind"
        )
        value = st.text_input(
            "User id, or user-id prefix",
            max_chars=128,
            key="b_value",
            help="Ignored for Everyone. A prefix such as `team-a-` covers every user whose id "
            "starts with it; the budget is for their spend together.",
        )
        left, middle, right = st.columns(3)
        period = left.selectbox("Period", list(PERIODS), format_func=PERIODS.__getitem__)
        amount = middle.number_input("Amount (USD)", min_value=0.0, value=10.0, step=1.0)
        warn = right.slider(
            "Warning at (% of the amount)", 1, 100, int(DEFAULT_WARN_FRACTION * 100)
        )
        added = st.form_submit_button("Add budget", icon=":material/save:", disabled=not actor)
    if added and actor:
        try:
            made = budgets.create_budget(
                engine=engine,
                scope_kind=kind,
                scope_value=value,
                period=period,
                limit_usd=amount,
                warn_fraction=warn / 100,
                actor=actor,
            )
        except BudgetInputError as error:
            st.error(str(error), icon=":material/error:")
        else:
            st.toast(f"Budget added for {made.scope}.", icon=":material/check:")
            st.rerun()

budget_section.section(engine, title="This period")

if current:
    st.subheader("Change or remove a budget")
    labels = {b.id: f"#{b.id} · {b.scope} · {b.period} · ${b.limit_usd:,.2f}" for b in current}
    chosen_id = st.selectbox("Budget", list(labels), format_func=labels.__getitem__)
    chosen = next(b for b in current if b.id == chosen_id)
    with st.form(f"edit_budget_{chosen.id}", border=False):
        left, middle, right = st.columns(3)
        new_period = left.selectbox(
            "Period",
            list(PERIODS),
            index=list(PERIODS).index(chosen.period),
            format_func=PERIODS.__getitem__,
        )
        new_amount = middle.number_input(
            "Amount (USD)", min_value=0.0, value=float(chosen.limit_usd), step=1.0
        )
        new_warn = right.slider(
            "Warning at (% of the amount)", 1, 100, round(chosen.warn_fraction * 100)
        )
        save, remove = st.columns(2)
        saved = save.form_submit_button("Save", icon=":material/save:", disabled=not actor)
        removed = remove.form_submit_button(
            "Remove budget", icon=":material/delete:", disabled=not actor
        )
    if (saved or removed) and actor:
        try:
            if removed:
                budgets.delete_budget(engine=engine, budget_id=chosen.id, actor=actor)
                st.toast(f"Budget for {chosen.scope} removed.", icon=":material/delete:")
            else:
                budgets.update_budget(
                    engine=engine,
                    budget_id=chosen.id,
                    actor=actor,
                    period=new_period,
                    limit_usd=new_amount,
                    warn_fraction=new_warn / 100,
                )
                st.toast(f"Budget for {chosen.scope} saved.", icon=":material/check:")
        except BudgetInputError as error:
            st.error(str(error), icon=":material/error:")
        else:
            st.rerun()

st.subheader("History")
log = budgets.history(engine=engine)
if log.empty:
    st.caption("No budget has been added or changed yet.")
else:
    st.dataframe(
        log,
        hide_index=True,
        width="stretch",
        column_config={
            "ts": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "actor": "Who",
            "action": "Action",
            "budget_id": st.column_config.NumberColumn("Budget", format="%d"),
            "scope": "Scope",
            "change": "Change",
        },
    )
    common.csv_download(log, "budget_history")
