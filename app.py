"""agent-chatbase: page config, settings check, navigation and the shared sidebar."""

import logging
import sys
import threading

import streamlit as st
from sqlalchemy.exc import SQLAlchemyError
from streamlit.runtime.scriptrunner import get_script_run_ctx

from api.server import BindRefused
from data.access import auth
from data.config.settings import Settings, SettingsError, get_settings
from data.config.urls import redact_url
from data.store.db import describe, failure_reason


def serve(argv: list[str]) -> int:
    """`python app.py [streamlit options]` (what `make run` does): check the settings, start the
    embedded model server when no OpenAI key or base URL is set, then serve this router.

    Under plain `streamlit run`, a fresh process stays in Streamlit's legacy pages/ mode until a
    session calls st.navigation, so the first visit to a shared page link would get a "Page not
    found" dialog; starting the server from here switches that mode off first."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    from agent.local_server import LocalModelError, start_for
    from data.config import heap
    from data.integrations.metrics import start_exporter
    from data.integrations.observability import init_sentry
    from data.workers.status import Monitor

    try:
        settings = get_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if (refusal := bind_refusal(settings, argv)) is not None:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    if settings.uses_local_model:
        try:
            start_for(settings)
            print(f"local model: SmolLM2-135M-Instruct on 127.0.0.1:{settings.local_model_port}")
        except LocalModelError as error:  # the analyst pages still work; chat says why
            print(f"warning: {error}", file=sys.stderr)
    # Prometheus can scrape from the start, before anyone opens a page; the dependency checks
    # feed its readiness alert (agent_ready) from then on too.
    start_exporter(host=settings.metrics_host, port=settings.metrics_port)
    Monitor(settings).start()
    init_sentry(settings, "ui")
    if settings.api_port:
        try:
            serve_api(settings)
        except BindRefused as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    # The long-lived objects (modules, the pages' and the agent's libraries) out of the
    # garbage collector's full passes, which otherwise stall a page view now and then.
    heap.settle((*heap.PAGES, "agent.runtime"))
    # No public API leaves the legacy pages/ mode before a session calls st.navigation (the
    # card fixes the folder's name); see pages.ui.common.ensure_routed for the session's side.
    PagesManager.uses_pages_directory = False
    sys.argv = ["streamlit", "run", __file__, *argv]
    return int(cli.main() or 0)


def bind_refusal(settings: Settings, argv: list[str]) -> str | None:
    """Why this server may not start, or None: with no users there is no sign-in, which is only
    safe on 127.0.0.1 (single-user local mode)."""
    from streamlit import config

    from data.access.auth import has_users
    from data.store.db import make_engine
    from data.store.migrate import upgrade

    address = str(config.get_option("server.address") or "")
    for index, arg in enumerate(argv):
        if arg == "--server.address" and index + 1 < len(argv):
            address = argv[index + 1]
        elif arg.startswith("--server.address="):
            address = arg.split("=", 1)[1]
    if address in auth.LOCAL_ADDRESSES:
        return None
    shown = address or "every interface (server.address unset)"
    try:
        upgrade(settings.sqlalchemy_url)
        engine = make_engine(settings.sqlalchemy_url)
        try:
            users = has_users(engine=engine)
        finally:
            engine.dispose()
    except SQLAlchemyError as error:
        where = describe(settings.sqlalchemy_url)
        return f"cannot check for users before serving on {shown}: {where}: {failure_reason(error)}"
    if users:
        return None
    return (
        f"no users exist, so there is no sign-in, and the server would listen on {shown}: "
        "create an admin first (python -m data.access.auth add NAME --role admin) or serve "
        "on 127.0.0.1"
    )


def serve_api(settings: Settings) -> None:
    """The HTTP API on API_HOST:API_PORT in this process, sharing the chat page's runtime
    (embedded Qdrant and the local model server are single-process resources). On SIGTERM
    the API stops accepting and lets turns in flight finish before Streamlit stops."""
    import signal

    from streamlit.web import bootstrap

    from api import server as api_server
    from api.main import create_app

    server = api_server.make_server(settings, app=create_app(settings))
    thread = api_server.serve_in_thread(server)
    print(f"API: http://{settings.api_host}:{settings.api_port} (docs at /docs)")
    streamlit_handler = bootstrap._set_up_signal_handler

    def drain_then_stop(streamlit_server: object) -> None:
        streamlit_handler(streamlit_server)  # type: ignore[arg-type]
        stop_streamlit = signal.getsignal(signal.SIGTERM)

        def on_term(number: int, frame: object) -> None:
            def drain() -> None:
                api_server.stop(server, thread, settings.shutdown_grace_s)
                if callable(stop_streamlit):
                    stop_streamlit(number, frame)

            threading.Thread(target=drain, name="drain", daemon=True).start()

        signal.signal(signal.SIGTERM, on_term)

    # Why a private hook: Streamlit has no public shutdown callback, and bootstrap installs its
    # own SIGTERM handler once the server runs (replacing one set before it), on the main
    # thread that then belongs to Tornado's loop. Wrapping the function that installs it is
    # the one place to run the API's drain first. Were an upgrade to rename it, the read above
    # fails at start-up instead of skipping the drain in silence.
    bootstrap._set_up_signal_handler = drain_then_stop  # type: ignore[assignment]


if __name__ == "__main__" and get_script_run_ctx(suppress_warning=True) is None:
    sys.exit(serve(sys.argv[1:]))

# Imported only here: its cached functions log warnings when imported outside a running app,
# which would bury the one line a refused `python app.py` prints.
from pages.ui import signin  # noqa: E402

# An emoji favicon is drawn in the page; a :material/...: one is fetched from fonts.gstatic.com,
# an outside request from every visitor's browser.
st.set_page_config(page_title="agent-chatbase", page_icon="🎧", layout="wide")

try:
    settings = get_settings()
except SettingsError as error:
    st.error(f"agent-chatbase cannot start: {error}")
    st.caption(
        "Fix the value in the environment, `.env` or `.streamlit/secrets.toml`, "
        "then reload this page."
    )
    st.stop()

logging.basicConfig(level=settings.log_level)

# Every page: (section, key, file, title, icon, URL path, visibility). URL paths differ from
# the file names on purpose: Streamlit serves a fresh process in its legacy pages/ mode, where
# a URL that names a file would run that file without this router (each page checks the role
# itself too, through signin.require).
PAGES = [
    ("Agent", "chat", "pages/chat.py", "Chat", ":material/chat:", "support-chat", "visible"),
    ("Analytics", "cost", "pages/cost.py", "Cost", ":material/payments:", "costs", "visible"),
    (
        "Analytics",
        "context",
        "pages/context.py",
        "Context window",
        ":material/memory:",
        "context-window",
        "visible",
    ),
    (
        "Analytics",
        "latency",
        "pages/latency.py",
        "Latency",
        ":material/timer:",
        "latency-report",
        "visible",
    ),
    (
        "Analytics",
        "conversation",
        "pages/conversation.py",
        "Conversation",
        ":material/forum:",
        "conversation-view",
        "hidden",
    ),
    (
        "Quality",
        "review",
        "pages/review.py",
        "Review",
        ":material/rate_review:",
        "review-queue",
        "visible",
    ),
    (
        "Quality",
        "outcomes",
        "pages/outcomes.py",
        "Outcomes",
        ":material/task_alt:",
        "conversation-outcomes",
        "visible",
    ),
    (
        "Quality",
        "feedback",
        "pages/feedback.py",
        "Feedback",
        ":material/reviews:",
        "feedback-report",
        "visible",
    ),
    (
        "Agent",
        "tickets",
        "pages/tickets.py",
        "Tickets",
        ":material/confirmation_number:",
        "support-tickets",
        "visible",
    ),
    (
        "Operations",
        "status",
        "pages/status.py",
        "Status",
        ":material/monitor_heart:",
        "system-status",
        "visible",
    ),
    (
        "Admin",
        "replay",
        "pages/replay.py",
        "Summarization replay",
        ":material/replay:",
        "summarization-replay",
        "visible",
    ),
    (
        "Admin",
        "budgets",
        "pages/budgets.py",
        "Budgets",
        ":material/savings:",
        "spending-budgets",
        "visible",
    ),
    ("Admin", "users", "pages/users.py", "Users", ":material/group:", "users", "visible"),
    ("Admin", "audit", "pages/audit.py", "Audit log", ":material/policy:", "audit-log", "visible"),
]


def landing() -> None:
    """The root URL: straight on to the first page this role may open."""
    first = next(p for p in PAGES if auth.may_open(who.role, p[1]) and p[6] == "visible")
    st.switch_page(first[2])


def not_allowed() -> None:
    """What a URL of a page outside this role's list opens (the page's code never runs)."""
    key = next(p[1] for p in PAGES if p[5] == page.url_path)
    signin.refused(key, who)


# The root URL is its own hidden page: a default page is served at "/" only, so making the chat
# the default would leave /support-chat without a page ("Page not found").
who = signin.identity()
if who is None:
    # Every URL shows the sign-in form; after sign-in the same URL opens its page.
    nav = {
        "": [
            st.Page(
                signin.sign_in_page, title="Sign in", icon=":material/lock:", url_path="sign-in"
            ),
            *(
                st.Page(signin.sign_in_page, title=t, url_path=u, visibility="hidden")
                for _, _, _, t, _, u, _ in PAGES
            ),
        ]
    }
else:
    nav = {"": [st.Page(landing, title="Home", url_path="home", default=True, visibility="hidden")]}
    for section, key, path, title, icon, url_path, visibility in PAGES:
        if auth.may_open(who.role, key):
            page_item = st.Page(
                path, title=title, icon=icon, url_path=url_path, visibility=visibility
            )
        else:
            page_item = st.Page(not_allowed, title=title, url_path=url_path, visibility="hidden")
        nav.setdefault(section, []).append(page_item)
page = st.navigation(nav, position="sidebar" if who is not None else "hidden")
if who is None:  # before sign-in nothing about the deployment is shown
    page.run()
    st.stop()

with st.sidebar:
    signin.sidebar_identity(who)
    st.caption(f"Database: {describe(settings.sqlalchemy_url)}")
    model = "SmolLM2-135M-Instruct (local)" if settings.uses_local_model else settings.chat_model
    st.caption(f"Chat model: {model} · environment: {settings.environment}")
    memory = (
        f"Qdrant at {redact_url(settings.qdrant_url)}" if settings.qdrant_url else "embedded Qdrant"
    )
    embedder = settings.embedding_model if settings.openai_api_key else "local MiniLM"
    tools = "on" if settings.uses_tools else "off (lookups go into the prompt)"
    tracing = (
        f"LangSmith project {settings.langsmith_project}" if settings.langsmith_enabled else "off"
    )
    feedback = (
        f"synced to LangSmith project {settings.langsmith_project}"
        if settings.langsmith_feedback_enabled
        else "kept in the database only"
    )
    st.caption(
        f"Memory: {memory}, {embedder} embeddings · tools: {tools} · tracing: {tracing} · "
        f"feedback: {feedback}",
        help="Long-term memory is per user: facts from each message (order numbers, names, "
        "e-mail addresses, problems, promises) are stored, and the best matches for a new "
        "message are added to the model's prompt. Tools are bound to models that can call "
        "them; the embedded model gets the order and help-center facts in its prompt instead. "
        "Tracing sends every agent run to LangSmith when LANGSMITH_TRACING=true and "
        "LANGSMITH_API_KEY are set; thumbs and review scores are sent to LangSmith whenever "
        "LANGSMITH_API_KEY is set.",
    )

page.run()
