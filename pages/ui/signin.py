"""Sign-in and roles on the pages: who this browser session is (password, OIDC, or the local
single-user mode), the sign-in form, each page's role check, and the sidebar's identity."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from data.access import audit, auth, throttle
from data.access.sanitize import md
from data.config.settings import get_settings
from pages.ui.resources import database_error, engine

IDENTITY = "auth_identity"


LOCAL_ADDRESSES = auth.LOCAL_ADDRESSES


@st.cache_data(ttl=5, max_entries=4, show_spinner=False)
def _has_users(_engine: Engine, url: str) -> bool:
    return auth.has_users(engine=_engine)


def bind_is_local() -> bool:
    """Whether this server listens on the loopback address only (server.address)."""
    return str(st.get_option("server.address") or "") in LOCAL_ADDRESSES


def client_address() -> str:
    """The client's address for throttling: the connection's, or the proxy's X-Forwarded-For
    (its last entry, the one the proxy added) when AUTH_TRUST_FORWARDED_FOR is on."""
    if get_settings().auth_trust_forwarded_for:
        forwarded = str(st.context.headers.get("X-Forwarded-For") or "")
        if last := forwarded.split(",")[-1].strip():
            return last[:128]
    address = st.context.ip_address
    return address if isinstance(address, str) else "127.0.0.1"


def oidc_providers() -> list[str | None] | None:
    """The OIDC providers configured under [auth] in secrets (None in the list: the unnamed
    one), or None when [auth] is not configured."""
    from streamlit.auth_util import get_secrets_auth_section

    section = get_secrets_auth_section()
    if not section:
        return None
    named = [str(k) for k, v in section.items() if hasattr(v, "items")]
    return ([None] if "client_id" in section else []) + named  # type: ignore[list-item]


def _refuse(message: str) -> None:
    st.error(message, icon=":material/block:")
    st.stop()


def identity() -> auth.Identity | None:
    """Who is using the app, checked on every rerun: the local user when no user exists and
    the server listens on 127.0.0.1 only; else the signed-in user (None before sign-in). An
    expired sign-in, a disabled user or a changed role take effect here."""
    settings = get_settings()
    try:
        db = engine()
        users = _has_users(db, settings.sqlalchemy_url)
    except SQLAlchemyError as error:
        _refuse(database_error(error))
    if not users:
        if not bind_is_local():
            _refuse(
                "No users exist and this server listens beyond 127.0.0.1: create an admin with "
                "`python -m data.access.auth add NAME --role admin` first."
            )
        return auth.Identity(auth.LOCAL_USER, "admin", "local")
    who: auth.Identity | None = st.session_state.get(IDENTITY)
    if who is None and oidc_providers() and st.user.is_logged_in:
        found = auth.oidc_identity(
            engine=db, claims=st.user.to_dict(), role_claim=settings.oidc_role_claim
        )
        if isinstance(found, str):
            st.session_state["auth_message"] = found
            audit.try_record(
                engine=db,
                actor=str(st.user.get("email") or "anonymous"),
                action="sign_in_failed",
                target=str(st.user.get("email") or ""),
                detail={"address": client_address(), "reason": found, "source": "oidc"},
            )
            st.logout()
            return None
        audit.try_record(
            engine=db,
            actor=found.username,
            action="sign_in",
            target=found.username,
            detail={"address": client_address(), "source": "oidc"},
        )
        st.session_state[IDENTITY] = who = found
    if who is None:
        return None
    if auth.expired(who, settings.session_ttl):
        sign_out(reason="Your session expired: sign in again.")
        return None
    if who.source == "password" or settings.oidc_role_claim is None:
        try:
            role = auth.user_role(engine=db, username=who.username)
        except SQLAlchemyError as error:
            _refuse(database_error(error))
        if role is None:
            sign_out(reason="Your account is disabled or was removed.")
            return None
        if role != who.role:
            st.session_state[IDENTITY] = who = replace(who, role=role)
    return who


def sign_out(reason: str | None = None) -> None:
    """End this browser session's sign-in (and the OIDC cookie), audited."""
    who: auth.Identity | None = st.session_state.pop(IDENTITY, None)
    for key in [k for k in st.session_state if k not in ("auth_message",)]:
        del st.session_state[key]
    if reason:
        st.session_state["auth_message"] = reason
    if who is not None:
        audit.try_record(
            engine=engine(),
            actor=who.username,
            action="sign_out",
            target=who.username,
            detail={"reason": reason or "signed out"},
        )
        if who.source == "oidc":
            st.logout()


def _submit_sign_in() -> None:
    settings = get_settings()
    db = engine()
    result = auth.sign_in(
        engine=db,
        throttle=throttle.make_throttle(settings, db),
        settings=settings,
        username=st.session_state.get("signin_user", ""),
        password=st.session_state.get("signin_password", ""),
        address=client_address(),
    )
    st.session_state["signin_password"] = ""
    if result.identity is None:
        st.session_state["auth_message"] = result.message
        return
    st.session_state.pop("auth_message", None)
    st.session_state[IDENTITY] = result.identity


def sign_in_form() -> None:
    """The sign-in form (user name and password, and single sign-on when configured)."""
    st.title("Sign in")
    st.caption("agent-chatbase: support chat, cost and quality analytics, review.")
    if message := st.session_state.get("auth_message"):
        st.warning(message, icon=":material/lock:")
    with st.form("sign_in", border=True, enter_to_submit=True):
        st.text_input("User name", key="signin_user", max_chars=64, autocomplete="username")
        st.text_input(
            "Password",
            key="signin_password",
            type="password",
            max_chars=auth.MAX_PASSWORD_CHARS,
            autocomplete="current-password",
        )
        st.form_submit_button("Sign in", type="primary", on_click=_submit_sign_in)
    for provider in oidc_providers() or []:
        label = f"Sign in with {provider}" if provider else "Sign in with single sign-on"
        if st.button(label, icon=":material/key:", key=f"oidc_{provider}"):
            st.login(provider) if provider else st.login()
    st.caption(
        f"A sign-in lasts {get_settings().session_ttl // 3600} h in this browser tab. "
        "No account? An admin adds one with `python -m data.access.auth add`."
    )


def sign_in_page() -> None:
    """The page behind every URL before sign-in; after it the same URL opens its page."""
    sign_in_form()
    if st.session_state.get(IDENTITY) is not None:
        st.rerun()


def require(page: str) -> auth.Identity:
    """The start of every page: the identity, or the sign-in form, or a refusal, for this page
    key. Called by the page itself, so a page run outside the router is checked too."""
    who = identity()
    if who is None:
        sign_in_form()
        if st.session_state.get(IDENTITY) is not None:
            st.rerun()
        st.stop()
    if not auth.may_open(who.role, page):
        refused(page, who)
        st.stop()
    return who


def refused(page: str, who: auth.Identity) -> None:
    roles = sorted(auth.PAGE_ROLES.get(page, ()), key=auth.ROLES.index)
    st.title("Not allowed")
    st.error(
        f"You are signed in as {who.username} ({who.label}); this page is for "
        f"{', '.join(auth.ROLE_LABELS[r] for r in roles) or 'nobody'}.",
        icon=":material/block:",
    )


def page_link(page: str, path: str, *, label: str, icon: str) -> None:
    """A link to another page, drawn only for a role that may open it (a link to a page
    outside the role's navigation would fail)."""
    from streamlit.errors import StreamlitAPIException

    who = identity()
    if who is not None and auth.may_open(who.role, page):
        # A page run outside the router (no navigation yet) has no pages to link to.
        with contextlib.suppress(StreamlitAPIException):
            st.page_link(path, label=label, icon=icon)


def may(action: str) -> bool:
    """Whether the current user may take an in-page action (for example fill the queue)."""
    who = st.session_state.get(IDENTITY)
    role = who.role if who is not None else ("admin" if _local() else None)
    return auth.may(role, action)


def _local() -> bool:
    try:
        return not _has_users(engine(), get_settings().sqlalchemy_url) and bind_is_local()
    except SQLAlchemyError:
        return False


def sidebar_identity(who: auth.Identity | None) -> None:
    """Who is signed in (and until when) with a sign-out button, or that local mode has no
    sign-in."""
    if who is None:
        return
    if who.source == "local":
        st.info(
            "Local mode: no sign-in. No users exist and the server listens on 127.0.0.1 only. "
            "`python -m data.access.auth add NAME --role admin` turns sign-in on.",
            icon=":material/lock_open:",
        )
        return
    ends = datetime.fromtimestamp(who.signed_in_at + get_settings().session_ttl, UTC)
    st.caption(f"Signed in as **{md(who.username)}** ({who.label}) · until {ends:%H:%M} UTC")
    st.button("Sign out", icon=":material/logout:", key="sign_out", on_click=sign_out)


def _keep_reviewer() -> None:
    st.session_state["reviewer"] = " ".join(st.session_state["reviewer_input"].split())


def reviewer() -> str | None:
    """Who is reviewing: the signed-in user. In single-user local mode, where nobody signs in,
    a name typed once per browser session in the sidebar."""
    who = identity()
    if who is None:
        return None
    if who.source != "local":
        return who.username
    # A widget's state is dropped on pages that do not draw it, so the name lives in its own
    # key and survives a visit to another page.
    st.session_state["reviewer_input"] = st.session_state.get("reviewer", "")
    st.sidebar.text_input(
        "Reviewer",
        key="reviewer_input",
        max_chars=64,
        placeholder="Your name",
        on_change=_keep_reviewer,
        help="Local mode: scores, claims and queue changes are recorded under this name.",
    )
    return st.session_state.get("reviewer") or None


def actor() -> str:
    """The name the audit log records for this browser session."""
    who = st.session_state.get(IDENTITY)
    if who is not None:
        return str(who.username)
    return str(st.session_state.get("reviewer") or auth.LOCAL_USER)
