"""Process-wide resources for the pages (the engine, the agent runtime, the feedback sync) and
the pieces several pages draw: filters, captions, transcripts, the reviewer's name."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from agent.runtime import Runtime, shared_runtime
from data.conversations import (
    TranscriptMessage,
    TurnEvent,
    TurnStats,
    transcript,
    turn_events,
    turn_stats,
)
from data.cost import known_models
from data.db import describe, make_engine
from data.filters import PRESET_LABELS, Filters, parse_filters
from data.langsmith_sync import SyncWorker, client_from_settings
from data.metrics import start_exporter
from data.migrate import upgrade
from data.settings import get_settings
from data.ticket_webhook import WebhookWorker, worker_from_settings


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
    return make_engine(settings.sqlalchemy_url)


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


def _keep_reviewer() -> None:
    st.session_state["reviewer"] = " ".join(st.session_state["reviewer_input"].split())


def reviewer() -> str | None:
    """Who is reviewing: a name typed once per browser session in the sidebar. Until sign-in
    exists this is the reviewer's identity; sign-in replaces this one function."""
    # A widget's state is dropped on pages that do not draw it, so the name lives in its own
    # key and survives a visit to another page.
    st.session_state["reviewer_input"] = st.session_state.get("reviewer", "")
    st.sidebar.text_input(
        "Reviewer",
        key="reviewer_input",
        max_chars=64,
        placeholder="Your name",
        on_change=_keep_reviewer,
        help="Scores, claims and queue changes are recorded under this name.",
    )
    return st.session_state.get("reviewer") or None


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
            st.date_input("From – to (UTC days)", key="f_dates", max_value=now.date())
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
        st.warning(notice, icon=":material/tune:")
    return filters


def describe_filters(filters: Filters) -> str:
    """One line that says what the figures below are computed over."""
    parts = [f"{filters.start:%Y-%m-%d %H:%M} – {filters.end:%Y-%m-%d %H:%M} UTC"]
    parts.append(", ".join(filters.models) if filters.models else "all models")
    if filters.user:
        parts.append(f"user {filters.user}")
    if filters.session:
        parts.append(f"session {filters.session}")
    parts.append(f"by {filters.unit}")
    return " · ".join(parts)


def csv_download(frame: Any, name: str, label: str = "Download CSV") -> None:
    st.download_button(
        label,
        frame.to_csv(index=False).encode(),
        f"{name}.csv",
        "text/csv",
        icon=":material/download:",
        key=f"csv_{name}",
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


def turn_details(events: list[TurnEvent] | None) -> None:
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
                st.caption(summary)
        for recall in recalls:
            if recall.status != "ok":
                st.warning(f"Memory was unavailable: {recall.error}", icon=":material/warning:")
        if memories:
            st.markdown("**Memories recalled**")
            for memory in memories:
                st.markdown(f"- {memory.get('text', '')} `{float(memory.get('score', 0)):.2f}`")
        if restored:
            st.markdown("**Facts restored from this conversation's summarized messages**")
            for memory in restored:
                st.markdown(f"- {memory.get('text', '')}")
        if recalls and not memories and not restored:
            st.caption(
                f"No memory above the similarity threshold ({recalls[0].latency_ms:.0f} ms)."
            )
        if tools:
            st.markdown("**Tools called**")
            for tool in tools:
                mark = "✅" if tool.status == "ok" else "⚠️"
                args = tool.detail.get("args")
                st.markdown(
                    f"- {mark} `{tool.name}` {'' if args is None else f'`{compact_json(args)}`'} "
                    f"· {tool.latency_ms:.0f} ms"
                )
                if tool.status != "ok" and tool.error:
                    st.caption(tool.error)
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
) -> None:
    """A conversation as chat messages: each answer with its usage caption and what the agent
    did, a notice (with the summary when it was recorded) before each turn where older messages
    were summarized (from its events, and the turns in `folds`), and `footer` under each
    answer."""
    stats = turn_stats(engine=engine, session_id=session_id)
    events = turn_events(engine=engine, session_id=session_id)
    summaries = {
        turn: [e.detail.get("summary") for e in found if e.kind == "summarization"]
        for turn, found in events.items()
    }
    folded = set(folds) | {turn for turn, found in summaries.items() if found}
    for message in transcript(engine=engine, session_id=session_id):
        if message.role == "user" and message.turn in folded:
            text = next((s for s in summaries.get(message.turn, []) if s), None)
            st.info(
                f"Before turn {message.turn} the older messages were summarized"
                + (f": {text}" if text else " (the summary text was not recorded)."),
                icon=":material/compress:",
            )
        with st.chat_message(message.role):
            st.markdown(message.content)
            if message.role == "assistant":
                st.caption(turn_caption(stats.get(message.turn)))
                turn_details(events.get(message.turn))
                if footer is not None:
                    footer(message)


def compact_json(value: Any, limit: int = 120) -> str:
    """A one-line JSON preview, clipped to `limit` characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def analyst_page() -> tuple[Engine, Filters]:
    """The start of every analyst page: the database (or a clear error), the shared filters,
    and, for an empty database, what to do instead of empty charts."""
    from data.cost import has_calls

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
            "30 days of demo history with `make demo` (see the README).",
            icon=":material/info:",
        )
        st.page_link("pages/chat.py", label="Open the chat", icon=":material/chat:")
        st.stop()
    return db, filters
