"""The review queue: which conversations to review, claims so that two reviewers never score
the same item at once, N independent 1-5 scores per item, and reviewers' progress."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine

from data.feedback import MAX_COMMENT_CHARS

SCORE_MIN, SCORE_MAX = 1, 5
RUBRIC: list[tuple[int, str]] = [
    (1, "Wrong or harmful: misleads the customer, breaks policy, or leaks data."),
    (2, "Unhelpful: misses the question or needs a human to undo it."),
    (3, "Partly right: useful but incomplete, vague, or needs a follow-up."),
    (4, "Good: correct and helpful, with small gaps in tone or detail."),
    (5, "Resolved: accurate, complete, kind, and the customer needs nothing more."),
]

__all__ = [
    "MAX_COMMENT_CHARS",
    "RUBRIC",
    "SCORE_MAX",
    "SCORE_MIN",
    "Claim",
    "QueueFilters",
    "ReviewInputError",
    "assign",
    "candidates",
    "claim_next",
    "enqueue",
    "item_scores",
    "progress",
    "release",
    "save_score",
    "scores_frame",
]


class ReviewInputError(ValueError):
    """A review action that cannot be done; the message is shown to the reviewer as is."""


@dataclass(frozen=True, slots=True)
class QueueFilters:
    """Which conversations the lead sees as candidates for the queue (conversations with a
    model call in [start, end))."""

    start: datetime
    end: datetime
    models: tuple[str, ...] = ()
    user: str | None = None
    not_scored: bool = False  # no reviewer score yet
    thumbs_down: bool = False  # at least one thumbs-down from the customer
    summarized: bool = False  # the conversation was summarized at least once
    cost_above_pct: float | None = None  # cost above this percentile (0-100) of the range
    latency_above_pct: float | None = None  # p95 latency above this percentile of the range
    sample: int | None = None  # a random sample of this many, reproducible with `seed`
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Claim:
    token: str
    item_id: int
    session_id: str
    reviewer: str
    expires_at: datetime


def candidates(*, engine: Engine, filters: QueueFilters) -> pd.DataFrame:
    """One row per conversation matching `filters`: session_id, user_id, model, started, turns,
    cost_usd, latency_p95_ms, peak_context_percent, summarized, thumbs_down, reviews_done,
    queued. Percentile thresholds are taken over all conversations of the range, model and
    user (before the other filters), with pandas' linear quantile; a row must be above it."""
    raise NotImplementedError


def enqueue(
    *,
    engine: Engine,
    session_ids: Sequence[str],
    reviews_required: int,
    created_by: str,
    assigned_to: str | None = None,
) -> int:
    """Queue conversations for review (those already queued are skipped); how many were added."""
    raise NotImplementedError


def assign(*, engine: Engine, item_ids: Sequence[int], reviewer: str | None) -> int:
    """Reserve items for a reviewer (None makes them open to all); how many items changed.
    An item is reserved for its assignee until that reviewer has scored it."""
    raise NotImplementedError


def claim_next(*, engine: Engine, reviewer: str, ttl_s: int = 900) -> Claim | None:
    """The reviewer's live claim if they hold one, else a claim on the next open item (fewer
    scores than required, not scored by this reviewer, no live claim of anyone else, not
    reserved for another reviewer; items reserved for this reviewer first), or None."""
    raise NotImplementedError


def release(*, engine: Engine, token: str) -> None:
    """Give an item back to the queue (a no-op for a claim that has already ended)."""
    raise NotImplementedError


def save_score(
    *,
    engine: Engine,
    token: str,
    reviewer: str,
    score: int,
    comment: str | None = None,
    sync_enabled: bool = True,
) -> int:
    """Store a reviewer's score under their live claim and end the claim, in one transaction;
    the score's id. Raises ReviewInputError, writing nothing, for a score outside 1-5, a comment
    over MAX_COMMENT_CHARS, and an unknown, ended, expired or someone else's claim."""
    raise NotImplementedError


def item_scores(*, engine: Engine, item_id: int, reviewer: str) -> pd.DataFrame:
    """The other reviewers' scores of an item (reviewer, score, comment, created_at), but only
    once `reviewer` has scored it: reviews stay independent. Empty before."""
    raise NotImplementedError


def progress(
    *, engine: Engine, day_start: datetime, start: datetime, end: datetime
) -> pd.DataFrame:
    """Per reviewer: done_today (scores in [day_start, day_start + 1 day)), done_in_range
    (scores in [start, end)), claimed (live claims now) and pending (open items reserved for
    them that they have not scored)."""
    raise NotImplementedError


def scores_frame(*, engine: Engine, start: datetime, end: datetime) -> pd.DataFrame:
    """Every score given in [start, end) with its item, session, reviewer, score, comment,
    created_at and the conversation's model, peak context %, summarized and cost."""
    raise NotImplementedError
