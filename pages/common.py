"""Process-wide resources for the pages (the engine, the agent runtime, the feedback sync) and
the pieces several pages draw: filters, captions, transcripts, the reviewer's name."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Collection
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from agent.runtime import Runtime, shared_runtime
from data.access import audit, auth
from data.access.sanitize import csv_bytes, mask_pii, md
from data.analytics import rollups
from data.analytics.cost import known_models
from data.analytics.filters import MIN_DAY, PRESET_LABELS, Filters, parse_filters
from data.config.settings import get_settings
from data.integrations.metrics import start_exporter
from data.store.conversations import (
    TranscriptMessage,
    TurnEvent,
    TurnStats,
    transcript,
    turn_events,
    turn_stats,
)
from data.store.db import describe, make_engine
from data.store.migrate import upgrade
from data.workers.langsmith_sync import SyncWorker, client_from_settings
from data.workers.ticket_webhook import WebhookWorker, worker_from_settings

log = logging.getLogger(__name__)


def ensure_routed() -> None:
    """Make sure app.py (the router) runs, even for a first visit to a page's own URL.

    Streamlit runs a fresh server in its legacy `pages/` folder mode until some session calls
    `st.navigation`; a first request for /cost would run pages/cost.py alone, without app.py's
    page config, settings check and sidebar. Leaving that mode and rerunning routes the same
    URL through app.py."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


@st.cache_resource(show_spinner="Opening the database…")
def engine() -> Engine:
    """The database engine, migrated to the newest schema; also starts /metrics once."""
    settings = get_settings()
    upgrade(settings.sqlalchemy_url)
    start_exporter(host=settings.metrics_host, port=settings.metrics_port)
    engine = make_engine(settings.sqlalchemy_url)
    try:
        rollups.warm(engine)  # the first refresh after a call then compiles nothing
    except SQLAlchemyError:  # only a head start; the first refresh compiles them instead
        log.warning("could not warm the rollup refresh's statements", exc_info=True)
    return engine


@st.cache_resource(show_spinner="Starting the chat model…")
def runtime() -> Runtime:
    """The agent and its chat service (starts the embedded model server when needed)."""
    return shared_runtime(get_settings(), engine=engine())


def _stop_worker(worker: SyncWorker | None) -> None:
    if worker is not None:
        worker.stop()


@st.cache_resource(show_spinner=False, on_release=_stop_worker)
def feedback_sync() -> SyncWorker | None:
    """The LangSmith outbox worker, started once per process when a LangSmith key is set;
    None when feedback stays local."""
    settings = get_settings()
    client = client_from_settings(settings) if settings.langsmith_feedback_enabled else None
    if client is None:
        return None
    return SyncWorker(
        engine(),
        client,
        interval_s=settings.feedback_sync_interval_s,
        project_name=settings.langsmith_project,
    ).start()


def _stop_webhook(worker: WebhookWorker | None) -> None:
    if worker is not None:
        worker.stop()


@st.cache_resource(show_spinner=False, on_release=_stop_webhook)
def ticket_webhook() -> WebhookWorker | None:
    """The ticket webhook outbox worker, started once per process when TICKET_WEBHOOK_URL is
    set; None when tickets stay on the Tickets page only."""
    worker = worker_from_settings(get_settings(), engine=engine())
    return worker.start() if worker is not None else None


# Sign-in and roles --------------------------------------------------------------------------

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
        throttle=auth.make_throttle(settings, db),
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


def database_error(error: SQLAlchemyError) -> str:
    """One line naming the unreachable database (never its password) and the driver's reason."""
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    return f"The database {describe(get_settings().sqlalchemy_url)} is unavailable: {reason}"


@st.cache_data(ttl=60, max_entries=8, show_spinner=False)
def _models(_engine: Engine, url: str) -> list[str]:
    return known_models(engine=_engine)


def _query_params() -> dict[str, str | list[str]]:
    params: dict[str, str | list[str]] = {}
    for key in st.query_params:
        values = st.query_params.get_all(key)
        params[key] = values if key == "model" else (values[-1] if values else "")
    return params


def _widget_params() -> dict[str, str | list[str]]:
    state = st.session_state
    params: dict[str, str | list[str]] = {"range": state["f_range"]}
    if state["f_range"] == "custom":
        dates = state.get("f_dates") or ()
        if len(dates) == 2:
            params["from"], params["to"] = dates[0].isoformat(), dates[1].isoformat()
        elif len(dates) == 1:  # the second click of a range pick has not happened yet
            params["from"] = params["to"] = dates[0].isoformat()
    if state["f_models"]:
        params["model"] = list(state["f_models"])
    for key, name in (("f_user", "user"), ("f_session", "session")):
        if state[key].strip():
            params[name] = state[key].strip()
    if state["f_grain"] != "auto":
        params["grain"] = state["f_grain"]
    return params


def sidebar_filters(engine: Engine) -> Filters:
    """The analyst pages' shared filters: read from the URL, shown in the sidebar, written back
    to the URL, so a link reproduces the view. Corrections are shown as notices."""
    models = _models(engine, get_settings().sqlalchemy_url)
    now = datetime.now(UTC)
    url_params = _query_params()
    from_url, notices = parse_filters(url_params, known_models=models, now=now)
    if st.session_state.get("_filters_query") != url_params:
        # The URL changed from outside (first visit, a shared link): it wins over the widgets.
        st.session_state["f_range"] = from_url.preset
        st.session_state["f_dates"] = (
            from_url.start.date(),
            (from_url.end - timedelta(days=1)).date(),
        )
        st.session_state["f_models"] = list(from_url.models)
        st.session_state["f_user"] = from_url.user or ""
        st.session_state["f_session"] = from_url.session or ""
        st.session_state["f_grain"] = "auto" if from_url.unit_auto else from_url.unit
    with st.sidebar:
        st.subheader("Filters")
        st.selectbox(
            "Date range", list(PRESET_LABELS), format_func=PRESET_LABELS.__getitem__, key="f_range"
        )
        if st.session_state["f_range"] == "custom":
            st.date_input(
                "From – to (UTC days)", key="f_dates", min_value=MIN_DAY, max_value=now.date()
            )
        st.multiselect("Models", models, key="f_models", placeholder="All models")
        st.text_input("User", key="f_user", placeholder="All users", max_chars=128)
        st.text_input("Session", key="f_session", placeholder="All sessions", max_chars=128)
        st.segmented_control(
            "Granularity",
            ["auto", "hour", "day"],
            key="f_grain",
            format_func=lambda g: g.capitalize(),
            help="Auto: hourly up to 3 days, daily beyond",
        )
    filters, more = parse_filters(_widget_params(), known_models=models, now=now)
    query = filters.to_query()
    if query != url_params:
        st.query_params.from_dict(query)
    st.session_state["_filters_query"] = query
    for notice in dict.fromkeys(notices + more):
        st.warning(md(notice), icon=":material/tune:")
    return filters


def describe_filters(filters: Filters) -> str:
    """One line that says what the figures below are computed over."""
    parts = [f"{filters.start:%Y-%m-%d %H:%M} – {filters.end:%Y-%m-%d %H:%M} UTC"]
    parts.append(md(", ".join(filters.models)) if filters.models else "all models")
    if filters.user:
        parts.append(f"user {md(filters.user)}")
    if filters.session:
        parts.append(f"session {md(filters.session)}")
    parts.append(f"by {filters.unit}")
    return " · ".join(parts)


def masking() -> bool:
    """PII_MASKING: mask e-mails, phones and card numbers where conversations are read."""
    return get_settings().pii_masking


def _audit_export(name: str, rows: int) -> None:
    audit.try_record(
        engine=engine(), actor=actor(), action="export", target=name, detail={"rows": rows}
    )


def csv_download(frame: Any, name: str, label: str = "Download CSV") -> None:
    """Every table's CSV download: cells that a spreadsheet would run as formulas are
    escaped, PII is masked with PII_MASKING, and the download is audited."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:100]
    st.download_button(
        label,
        csv_bytes(frame, mask=masking()),
        f"{name}.csv",
        "text/csv",
        icon=":material/download:",
        key=f"csv_{name}",
        on_click=_audit_export,
        args=(name, len(frame)),
    )


def compact(n: int) -> str:
    """12,345 / 1.23M / 4.56B: a metric card that fits its column."""
    for size, suffix in ((1e9, "B"), (1e6, "M")):
        if n >= size:
            return f"{n / size:,.2f}{suffix}"
    return f"{n:,}"


def open_conversation(session_id: str) -> None:
    """Drill down: open the conversation viewer on one session."""
    st.switch_page("pages/conversation.py", query_params={"session": session_id})


def turn_caption(stats: TurnStats | None) -> str:
    """Tokens, cost, latency and context % of one turn, under its answer."""
    if stats is None:
        return "usage not recorded"
    cost = "unpriced" if stats.cost_usd is None else f"${stats.cost_usd:.6f}"
    context = "–" if stats.context_percent is None else f"{stats.context_percent:.1f}%"
    text = (
        f"{stats.input_tokens:,} in · {stats.output_tokens:,} out tokens · {cost} · "
        f"{stats.latency_ms / 1000:.2f} s · context {context}"
    )
    if stats.calls > 1:
        text += f" · {stats.calls} model calls"
    if stats.errors:
        text += f" · {stats.errors} failed"
    return text


def turn_details(events: list[TurnEvent] | None, *, mask: bool = True) -> None:
    """What the agent did for one answer: the memories it recalled, the tools it called and a
    summarization, in an expander under the answer. Nothing is drawn for a turn without events."""
    if not events:
        return
    recalls = [e for e in events if e.kind == "memory_recall"]
    tools = [e for e in events if e.kind == "tool_call"]
    folds = [e for e in events if e.kind == "summarization"]
    memories = [m for e in recalls for m in e.detail.get("memories", [])]
    restored = [m for e in recalls for m in e.detail.get("restored", [])]
    used = len(memories) + len(restored)
    parts = [f"{used} memor{'y' if used == 1 else 'ies'} used"]
    if tools:
        failed = sum(e.status != "ok" for e in tools)
        parts.append(f"{len(tools)} tool call{'s' if len(tools) != 1 else ''}")
        if failed:
            parts.append(f"{failed} failed")
    if folds:
        parts.append("summarized")
    with st.expander(" · ".join(parts), icon=":material/psychology:"):
        for fold in folds:
            st.markdown(
                f"**Summarized** before this answer: {fold.messages_folded or 0} messages folded, "
                f"{fold.tokens_before or 0:,} → {fold.tokens_after or 0:,} tokens "
                f"in {fold.latency_ms / 1000:.2f} s."
            )
            if summary := fold.detail.get("summary"):
                st.caption(shown(summary, mask))
        for recall in recalls:
            if recall.status != "ok":
                st.warning(f"Memory was unavailable: {md(recall.error)}", icon=":material/warning:")
        if memories:
            st.markdown("**Memories recalled**")
            for memory in memories:
                text = shown(memory.get("text", ""), mask)
                st.markdown(f"- {text} · {float(memory.get('score', 0)):.2f}")
        if restored:
            st.markdown("**Facts restored from this conversation's summarized messages**")
            for memory in restored:
                st.markdown(f"- {shown(memory.get('text', ''), mask)}")
        if recalls and not memories and not restored:
            st.caption(
                f"No memory above the similarity threshold ({recalls[0].latency_ms:.0f} ms)."
            )
        if tools:
            st.markdown("**Tools called**")
            for tool in tools:
                mark = "✅" if tool.status == "ok" else "⚠️"
                args = tool.detail.get("args")
                shown_args = "" if args is None else " " + shown(compact_json(args), mask)
                st.markdown(f"- {mark} {md(tool.name)}{shown_args} · {tool.latency_ms:.0f} ms")
                if tool.status != "ok" and tool.error:
                    st.caption(shown(tool.error, mask))
        used_articles = [a for tool in tools for a in tool.detail.get("articles", [])]
        if used_articles:
            st.markdown("**Help-center articles used**")
            for article in dict.fromkeys(
                (str(a.get("title", "")), str(a.get("file", ""))) for a in used_articles
            ):
                # The team's own text: shown as text, never as Markdown.
                st.text(f"{article[0]} ({article[1] or 'built-in'})")


def conversation(
    engine: Engine,
    session_id: str,
    *,
    folds: Collection[int] = (),
    footer: Callable[[TranscriptMessage], None] | None = None,
    mask: bool = True,
    before: datetime | None = None,
) -> None:
    """A conversation as chat messages: each answer with its usage caption and what the agent
    did, a notice (with the summary when it was recorded) before each turn where older messages
    were summarized (from its events, and the turns in `folds`), and `footer` under each
    answer. With PII_MASKING on and `mask`, e-mails, phones and card numbers are masked.
    With `before`, only the messages stored before that moment."""
    stats = turn_stats(engine=engine, session_id=session_id)
    events = turn_events(engine=engine, session_id=session_id)
    summaries = {
        turn: [e.detail.get("summary") for e in found if e.kind == "summarization"]
        for turn, found in events.items()
    }
    folded = set(folds) | {turn for turn, found in summaries.items() if found}
    messages = transcript(engine=engine, session_id=session_id)
    if before is not None:  # a turn still being answered is drawn by its page
        messages = [m for m in messages if m.created_at < before]
    answered = {m.turn for m in messages if m.role == "assistant"}
    for message in messages:
        if message.role == "user" and message.turn in folded:
            text = next((s for s in summaries.get(message.turn, []) if s), None)
            st.info(
                f"Before turn {message.turn} the older messages were summarized"
                + (f": {shown(text, mask)}" if text else " (the summary text was not recorded)."),
                icon=":material/compress:",
            )
        with st.chat_message(message.role):
            st.markdown(shown(message.content, mask))
            if message.role == "assistant":
                st.caption(turn_caption(stats.get(message.turn)))
                turn_details(events.get(message.turn), mask=mask)
                if footer is not None:
                    footer(message)
            elif message.turn not in answered:
                st.caption(unanswered(events.get(message.turn), stats.get(message.turn)))


def unanswered(events: list[TurnEvent] | None, stats: TurnStats | None) -> str:
    """Why a customer's message has no answer, from what its turn recorded."""
    cancelled = next((e for e in events or [] if e.kind == "turn_cancelled"), None)
    if cancelled is not None:
        return f"No answer: {md(cancelled.error or 'cancelled')}."
    refused = next((e for e in events or [] if e.status == "error" and e.error), None)
    if refused is not None:
        return f"No answer: {md(refused.error)}."
    if stats is not None and stats.errors:
        return "No answer: the model call failed; the message was kept, send it again."
    return "No answer recorded for this message."


def shown(text: Any, mask: bool = True) -> str:
    """Untrusted text (chat, model answers, memories, summaries, comments) ready for a
    Markdown element: escaped, and with PII masked when PII_MASKING is on and `mask`."""
    return md(mask_pii(text) if mask and masking() else text)


def compact_json(value: Any, limit: int = 120) -> str:
    """A one-line JSON preview, clipped to `limit` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def analyst_page() -> tuple[Engine, Filters]:
    """The start of every analyst page: the database (or a clear error), the shared filters,
    and, for an empty database, what to do instead of empty charts."""
    from data.analytics.cost import has_calls

    try:
        db = engine()
        any_calls = has_calls(engine=db)
    except SQLAlchemyError as error:
        st.error(database_error(error))
        st.stop()
    filters = sidebar_filters(db)
    if not any_calls:
        st.info(
            "No model calls are recorded yet. Chat with the agent on the **Chat** page, or load "
            "30 days of demo history with `make demo` (see Getting started in the docs).",
            icon=":material/info:",
        )
        page_link("chat", "pages/chat.py", label="Open the chat", icon=":material/chat:")
        st.stop()
    demo_notice(db, filters)
    return db, filters


def demo_notice(db: Engine, filters: Filters) -> None:
    """Say so when the range holds generated demo rows (`make demo`), on every analyst page."""
    from data.analytics.compare import has_demo_rows

    if has_demo_rows(engine=db, filters=filters):
        st.warning(
            "This range holds **demo rows** generated by `make demo`, not real traffic. "
            "Remove them with `python -m data.store.demo --remove`.",
            icon=":material/science:",
        )
