"""agent-chatbase: page config, settings check, navigation and the shared sidebar."""

import logging
import sys

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from data.db import describe
from data.settings import SettingsError, get_settings

if __name__ == "__main__" and get_script_run_ctx() is None:
    # `python app.py [streamlit options]` (what `make run` does) starts the server with this
    # router in charge from the first request. Under plain `streamlit run`, a fresh process is in
    # Streamlit's legacy pages/ mode until a session calls st.navigation, so the first visit to
    # a shared page link would get a "Page not found" dialog.
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    PagesManager.uses_pages_directory = False
    sys.argv = ["streamlit", "run", __file__, *sys.argv[1:]]
    sys.exit(cli.main())

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
        ],
        "Analytics": [
            st.Page("pages/cost.py", title="Cost", icon=":material/payments:", url_path="costs"),
        ],
    }
)

with st.sidebar:
    st.caption(f"Database: {describe(settings.sqlalchemy_url)}")
    model = "SmolLM2-135M-Instruct (local)" if settings.uses_local_model else settings.chat_model
    st.caption(f"Chat model: {model} · environment: {settings.environment}")

page.run()
