"""The feedback outbox: thumbs and review scores are written to the database first and pushed
to LangSmith by a background worker, so a LangSmith outage loses nothing.

Each row has a LangSmith feedback id fixed when the row is created; a retry or an update always
addresses that id, so LangSmith never holds a duplicate."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from langsmith import Client
from sqlalchemy import Engine

from data.settings import Settings

THUMBS_KEY = "thumbs"  # score 1 (up) or 0 (down)
QUALITY_KEY = "quality"  # reviewer score, as given: 1-5


def client_from_settings(settings: Settings) -> Client | None:
    """The LangSmith client the worker pushes with, or None when no key is set."""
    raise NotImplementedError


def sync_status(*, engine: Engine) -> dict[str, int]:
    """How many thumbs and scores are pending, synced, failed and local."""
    raise NotImplementedError


def retry_now(*, engine: Engine) -> int:
    """Make failed items and items waiting out a backoff due now; how many were changed."""
    raise NotImplementedError


class SyncWorker:
    """Pushes due outbox items to LangSmith every `interval_s` seconds on a daemon thread."""

    def __init__(
        self,
        engine: Engine,
        client: Client,
        *,
        interval_s: float = 5.0,
        batch: int = 100,
        project_name: str | None = None,
    ) -> None:
        self.engine = engine
        self.client = client
        self.interval_s = interval_s
        self.batch = batch
        self.project_name = project_name

    def run_once(self) -> dict[str, int]:
        """Push every item due now (in batches); counts of synced, retrying and failed items."""
        raise NotImplementedError

    def start(self) -> SyncWorker:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError


def pull_feedback(
    *, client: Client, run_ids: Sequence[str], engine: Engine | None = None
) -> pd.DataFrame:
    """Feedback on our runs that other tools wrote in LangSmith (`list_feedback`), with source
    "langsmith": feedback_id, run_id, key, score, value, comment, created_at, source. Feedback
    this app wrote (its ids are in our tables, read through `engine`) is left out."""
    raise NotImplementedError
