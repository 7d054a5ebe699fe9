"""Feedback analytics: reviewer scores over time and by model, score against context %,
summarization and cost (quality against cost), and the customers' thumbs-up rate.

Conversations are placed in time by their first model call, so "over time" shows the quality of
the answers given then, whenever they were reviewed."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine

from data.filters import Filters

CONTEXT_BUCKETS = (0.0, 25.0, 50.0, 75.0, 90.0)  # lower edges, in % of the input window


def score_distribution_over_time(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Scores per time bucket (filters.unit): bucket, score, count."""
    raise NotImplementedError


def score_distribution_by_model(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Scores per model: model, score, count."""
    raise NotImplementedError


def score_by_context_bucket(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Mean score by the conversation's peak context % bucket: bucket, scores, mean_score."""
    raise NotImplementedError


def score_by_summarized(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Mean score of summarized and not summarized conversations: summarized, scores,
    mean_score."""
    raise NotImplementedError


def score_by_cost_bucket(*, engine: Engine, filters: Filters, buckets: int = 4) -> pd.DataFrame:
    """Mean score by conversation cost quantile bucket: bucket, low_usd, high_usd, scores,
    mean_score."""
    raise NotImplementedError


def thumbs_rate_over_time(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Customers' thumbs per time bucket: bucket, up, down, up_rate (0-1)."""
    raise NotImplementedError
