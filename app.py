"""agent-chatbase: page config, settings check, navigation and the shared sidebar."""

import logging
import sys
import threading

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from api.server import BindRefused
from data.db import describe
from data.settings import Settings, SettingsError, get_settings


def serve(argv: list[str]) -> int:
    """`python app.py [streamlit options]` (what `make run` does): check the settings, start the
    embedded model server when no OpenAI key or base URL is set, then serve this router.

    Under plain `streamlit run`, a fresh process stays in Streamlit's legacy pages/ mode until a
    session calls st.navigation, so the first visit to a shared page link would get a "Page not
    found" dialog; starting the server from here switches that mode off first."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    from agent.local_server import LocalModelError, start_for
    from data.metrics import start_exporter

    try:
        settings = get_settings()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if settings.uses_local_model:
        try:
            start_for(settings)
            print(f"local model: SmolLM2-135M-Instruct on 127.0.0.1:{settings.local_model_port}")
        except LocalModelError as error:  # the analyst pages still work; chat says why
            print(f"warning: {error}", file=sys.stderr)
    # Prometheus can scrape from the start, before anyone opens a page.
    start_exporter(host=settings.metrics_host, port=settings.metrics_port)
    if settings.api_port:
        try:
            serve_api(settings)
        except BindRefused as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    PagesManager.uses_pages_directory = False
    sys.argv = ["streamlit", "run", __file__, *argv]
    return int(cli.main() or 0)


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

    bootstrap._set_up_signal_handler = drain_then_stop  # type: ignore[assignment]


if __name__ == "__main__" and get_script_run_ctx() is None:
    sys.exit(serve(sys.argv[1:]))

st.set_page_config(page_title="agent-chatbase", page_icon=":material/support_agent:", layout="wide")

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

# URL paths differ from the file names on purpose: Streamlit serves a fresh process in its
# legacy pages/ mode, where a URL that names a file would run that file without this router.
page = st.navigation(
    {
        "Agent": [
            st.Page(
                "pages/chat.py",
                title="Chat",
                icon=":material/chat:",
                default=True,
                url_path="support-chat",
            ),
            st.Page(
                "pages/tickets.py",
                title="Tickets",
                icon=":material/confirmation_number:",
                url_path="support-tickets",
            ),
        ],
        "Analytics": [
            st.Page("pages/cost.py", title="Cost", icon=":material/payments:", url_path="costs"),
            st.Page(
                "pages/context.py",
                title="Context window",
                icon=":material/memory:",
                url_path="context-window",
            ),
            st.Page(
                "pages/latency.py",
                title="Latency",
                icon=":material/timer:",
                url_path="latency-report",
            ),
            st.Page(
                "pages/replay.py",
                title="Summarization replay",
                icon=":material/replay:",
                url_path="summarization-replay",
            ),
            st.Page(
                "pages/budgets.py",
                title="Budgets",
                icon=":material/savings:",
                url_path="spending-budgets",
            ),
            st.Page(
                "pages/conversation.py",
                title="Conversation",
                icon=":material/forum:",
                url_path="conversation-view",
                visibility="hidden",
            ),
        ],
        "Quality": [
            st.Page(
                "pages/review.py",
                title="Review",
                icon=":material/rate_review:",
                url_path="review-queue",
            ),
            st.Page(
                "pages/feedback.py",
                title="Feedback",
                icon=":material/reviews:",
                url_path="feedback-report",
            ),
        ],
    }
)

with st.sidebar:
    st.caption(f"Database: {describe(settings.sqlalchemy_url)}")
    model = "SmolLM2-135M-Instruct (local)" if settings.uses_local_model else settings.chat_model
    st.caption(f"Chat model: {model} · environment: {settings.environment}")
    memory = f"Qdrant at {settings.qdrant_url}" if settings.qdrant_url else "embedded Qdrant"
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
