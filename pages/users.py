"""Users and roles (admins): add a user, change a role, reset a password, disable or enable."""

import pandas as pd
import streamlit as st
from sqlalchemy.exc import SQLAlchemyError

from data import auth
from data.models import ROLES
from data.sanitize import md
from pages import common

common.ensure_routed()
me = common.require("users")

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
        "`python -m data.auth add NAME --role admin`; from then on everyone signs in and "
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


def done(message: str) -> None:
    common._has_users.clear()
    st.toast(message, icon=":material/check_circle:")
    st.rerun()


left, right = st.columns(2, gap="large")
with left, st.form("add_user", clear_on_submit=True):
    st.subheader("Add a user")
    name = st.text_input("User name", max_chars=64, help="Lower-case letters, digits, . _ @ -")
    role = st.selectbox("Role", ROLES, format_func=auth.ROLE_LABELS.__getitem__)
    email = st.text_input("E-mail (for single sign-on)", max_chars=254)
    password = st.text_input(
        "Password", type="password", help=f"At least {auth.MIN_PASSWORD_CHARS} characters."
    )
    sso = st.checkbox("Single sign-on only (no password)")
    if st.form_submit_button("Add user", type="primary"):
        try:
            made = auth.add_user(
                engine=engine,
                actor=me.username,
                username=name,
                role=role,
                password=None if sso else password,
                email=email or None,
            )
        except auth.AuthInputError as error:
            st.error(md(error), icon=":material/error:")
        else:
            done(f"Added {made.username} ({auth.ROLE_LABELS[made.role]}).")

with right:
    names = [u.username for u in users]
    st.subheader("Change a user")
    target = st.selectbox("User", names, key="u_target")
    current = next((u for u in users if u.username == target), None)
    with st.form("change_role"):
        new_role = st.selectbox(
            "Role",
            ROLES,
            index=ROLES.index(current.role) if current else 0,
            format_func=auth.ROLE_LABELS.__getitem__,
        )
        if st.form_submit_button("Change role") and target:
            if target == me.username and new_role != "admin":
                st.error("You cannot take the admin role from yourself; ask another admin.")
            else:
                auth.set_role(engine=engine, actor=me.username, username=target, role=new_role)
                done(f"{target} is now {auth.ROLE_LABELS[new_role]}.")
    with st.form("reset_password", clear_on_submit=True):
        new_password = st.text_input("New password", type="password")
        if st.form_submit_button("Set password") and target:
            try:
                auth.set_password(
                    engine=engine, actor=me.username, username=target, password=new_password
                )
            except auth.AuthInputError as error:
                st.error(md(error), icon=":material/error:")
            else:
                done(f"Password of {target} changed.")
    if current is not None:
        verb = "Enable" if current.disabled else "Disable"
        if st.button(f"{verb} {current.username}", disabled=current.username == me.username):
            auth.set_disabled(
                engine=engine,
                actor=me.username,
                username=current.username,
                disabled=not current.disabled,
            )
            done(f"{current.username} {verb.lower()}d.")
