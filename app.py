"""agent-chatbase: page config, settings check, navigation and the shared sidebar."""

import logging

import streamlit as st

from data.db import describe
from data.settings import SettingsError, get_settings

st.set_page_config(page_title="agent-chatbase", page_icon=":material/support_agent:",
                   layout="wide")

try:
    settings = get_settings()
except SettingsError as error:
    st.error(f"agent-chatbase cannot start: {error}")
    st.caption("Fix the value in the environment, `.env` or `.streamlit/secrets.toml`, "
               "then reload this page.")
    st.stop()

logging.basicConfig(level=settings.log_level)

page = st.navigation(
    {
        "Agent": [
            st.Page("pages/chat.py", title="Chat", icon=":material/chat:", default=True),
        ],
        "Analytics": [
            st.Page("pages/cost.py", title="Cost", icon=":material/payments:"),
        ],
    }
)

with st.sidebar:
    st.caption(f"Database: {describe(settings.sqlalchemy_url)}")
    model = "SmolLM2-135M-Instruct (local)" if settings.uses_local_model else settings.chat_model
    st.caption(f"Chat model: {model} · environment: {settings.environment}")

page.run()
