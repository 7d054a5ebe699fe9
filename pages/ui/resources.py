"""What every page shares for the process's life: the database engine (migrated at start-up), the
agent runtime, and the background workers, each built once and cached by Streamlit."""

from __future__ import annotations

import logging

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from agent.runtime import Runtime, shared_runtime
from data.analytics import rollups
from data.config.settings import get_settings
from data.integrations.metrics import start_exporter
from data.store.db import describe, failure_reason, make_engine, register_replica
from data.store.migrate import upgrade
from data.workers.langsmith_sync import SyncWorker, client_from_settings
from data.workers.outcome_judge import OutcomeWorker, shared_worker
from data.workers.ticket_webhook import WebhookWorker, worker_from_settings

log = logging.getLogger(__name__)


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


@st.cache_resource(show_spinner=False)
def read_engine() -> Engine | None:
    """The read replica's engine (DATABASE_READ_URL), whose writes go to engine(); None when
    the pages read the primary. Connects on first use, so a replica that is down costs nothing
    here."""
    url = get_settings().sqlalchemy_read_url
    if url is None:
        return None
    replica = make_engine(url)
    register_replica(replica, engine())
    return replica


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


@st.cache_resource(show_spinner=False)
def outcome_worker() -> OutcomeWorker | None:
    """The outcome worker of this process (shared with the API served beside the UI), started
    once; None when OUTCOME_WORKER is off. Without a chat model the rules still decide."""
    settings = get_settings()
    if not settings.outcome_worker:
        return None
    try:
        judge = runtime().judge
    except Exception as error:  # the model is down: rules only until it is back
        log.warning("the outcome judge has no model: %s", error)
        judge = None
    return shared_worker(settings, engine(), judge)


def database_error(error: SQLAlchemyError) -> str:
    """One line naming the unreachable database (never its password) and the driver's reason."""
    where = describe(get_settings().sqlalchemy_url)
    return f"The database {where} is unavailable: {failure_reason(error)}"
