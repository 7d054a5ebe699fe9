"""Users and roles (admins): add a user, change a role, reset a password, disable or enable."""

import pandas as pd
import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from data.access import auth
from data.access.sanitize import md
from data.store.orm_team import ROLES
from pages.ui import common, signin

common.ensure_routed()
me = signin.require("users")

st.title("Users")
try:
    engine = common.engine()
    users = auth.list_users(engine=engine)
except SQLAlchemyError as error:
    st.error(common.database_error(error))
    st.stop()

if me.source == "local":
    st.info(
        "Local mode: nobody signs in. Create the first admin on the command line, "
        "`python -m data.access.auth add NAME --role admin`; from then on everyone signs in and "
        "admins manage users here.",
        icon=":material/info:",
    )
    st.stop()

frame = pd.DataFrame(
    [
        {
            "username": u.username,
            "role": auth.ROLE_LABELS[u.role],
            "email": u.email,
            "state": "disabled" if u.disabled else "enabled",
            "sign-in": "password" if u.has_password else "single sign-on only",
            "created_at": u.created_at,
            "updated_at": u.updated_at,
        }
        for u in users
    ]
)
st.dataframe(
    frame,
    hide_index=True,
    width="stretch",
    column_config={
        "created_at": st.column_config.DatetimeColumn("Created (UTC)", format="YYYY-MM-DD HH:mm"),
        "updated_at": st.column_config.DatetimeColumn("Changed (UTC)", format="YYYY-MM-DD HH:mm"),
    },
)
common.csv_download(frame, "users")


# Changes run in the buttons' callbacks, before the page is drawn again, so the table below
# already shows them (and a rerun of the page cannot lose a click).
def _done(message: str) -> None:
    signin._has_users.clear()
    st.session_state["users_done"] = message
    st.session_state.pop("users_error", None)


def _failed(error: Exception) -> None:
    st.session_state["users_error"] = str(error)


def add() -> None:
    state = st.session_state
    try:
        made = auth.add_user(
            engine=engine,
            actor=me.username,
            username=state.get("u_name", ""),
            role=state.get("u_role", "analyst"),
            password=None if state.get("u_sso") else state.get("u_password", ""),
            email=state.get("u_email") or None,
        )
    except auth.AuthInputError as error:
        _failed(error)
        return
    for key in ("u_name", "u_email", "u_password"):
        state[key] = ""
    _done(f"Added {made.username} ({auth.ROLE_LABELS[made.role]}).")


def change_role() -> None:
    target, role = st.session_state.get("u_target"), st.session_state.get("u_new_role")
    if not target or not role:
        return
    if target == me.username and role != "admin":
        _failed(ValueError("You cannot take the admin role from yourself; ask another admin."))
        return
    auth.set_role(engine=engine, actor=me.username, username=target, role=role)
    _done(f"{target} is now {auth.ROLE_LABELS[role]}.")


def reset_password() -> None:
    target = st.session_state.get("u_target")
    try:
        auth.set_password(
            engine=engine,
            actor=me.username,
            username=target or "",
            password=st.session_state.get("u_new_password", ""),
        )
    except auth.AuthInputError as error:
        _failed(error)
        return
    st.session_state["u_new_password"] = ""
    _done(f"Password of {target} changed.")


def toggle(name: str, disabled: bool) -> None:
    auth.set_disabled(engine=engine, actor=me.username, username=name, disabled=disabled)
    _done(f"{name} {'disabled' if disabled else 'enabled'}.")


if message := st.session_state.pop("users_done", None):
    st.toast(md(message), icon=":material/check_circle:")
if problem := st.session_state.pop("users_error", None):
    st.error(md(problem), icon=":material/error:")

left, right = st.columns(2, gap="large")
with left, st.form("add_user"):
    st.subheader("Add a user")
    st.text_input(
        "User name", max_chars=64, key="u_name", help="Lower-case letters, digits, . _ @ -"
    )
    st.selectbox("Role", ROLES, format_func=auth.ROLE_LABELS.__getitem__, key="u_role")
    st.text_input("E-mail (for single sign-on)", max_chars=254, key="u_email")
    st.text_input(
        "Password",
        type="password",
        key="u_password",
        help=f"At least {auth.MIN_PASSWORD_CHARS} characters.",
    )
    st.checkbox("Single sign-on only (no password)", key="u_sso")
    st.form_submit_button("Add user", type="primary", on_click=add)

with right:
    names = [u.username for u in users]
    st.subheader("Change a user")
    target = st.selectbox("User", names, key="u_target")
    current = next((u for u in users if u.username == target), None)
    with st.form("change_role"):
        st.selectbox(
            "Role",
            ROLES,
            index=ROLES.index(current.role) if current else 0,
            format_func=auth.ROLE_LABELS.__getitem__,
            key="u_new_role",
        )
        st.form_submit_button("Change role", on_click=change_role)
    with st.form("reset_password"):
        st.text_input("New password", type="password", key="u_new_password")
        st.form_submit_button("Set password", on_click=reset_password)
    if current is not None:
        verb = "Enable" if current.disabled else "Disable"
        st.button(
            f"{verb} {current.username}",
            disabled=current.username == me.username,
            on_click=toggle,
            args=(current.username, not current.disabled),
        )
