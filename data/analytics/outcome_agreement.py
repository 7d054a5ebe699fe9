"""How far the outcome judge can be trusted: its verdicts against the outcome and topic that
reviewers picked for the same conversations in the review queue (blind: the queue never shows
the judge's verdict). Cohen's κ and nominal Krippendorff's α over the (judge, reviewer) pairs,
the confusion matrix, the same per rubric version and per judge model, and the disagreements.

Only verdicts the judge gave count (decided_by = judge): the rules' verdicts are facts (a ticket
was opened), not a model's reading."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
from sqlalchemy import ColumnElement, Engine, Table, and_, func, select

from data.analytics.filters import Filters
from data.analytics.outcomes import O, where
from data.store.orm_outcomes import OUTCOMES
from data.store.orm_team import ReviewScore

R = cast(Table, ReviewScore.__table__)
MIN_ITEMS = 30  # fewer labelled pairs than this: no verdict on the judge either way
DISAGREEMENTS_SHOWN = 500  # the latest disagreements the page lists (all are counted)
PAIR_COLUMNS = [
    "session_id",
    "ended_at",
    "judge_outcome",
    "judge_topic",
    "reviewer",
    "reviewer_outcome",
    "reviewer_topic",
    "judge_model",
    "rubric_version",
    "confidence",
    "reason",
]


def kappa_of_table(table: np.ndarray) -> float | None:
    """Cohen's κ from a square contingency table (rater A's labels as rows, B's as columns, in
    the same order): (p_o − p_e) ÷ (1 − p_e), where p_o is the share of items on the diagonal
    and p_e the share expected by chance from each rater's own label frequencies. None when
    undefined (no items, or both raters always gave the one same label). Written here rather
    than taken from scikit-learn, a large dependency for one formula; tests check it against a
    hand-computed example."""
    n = float(table.sum())
    if n == 0:
        return None
    observed = float(np.trace(table)) / n
    expected = float((table.sum(axis=1) / n) @ (table.sum(axis=0) / n))
    if math.isclose(expected, 1.0):
        return None
    return (observed - expected) / (1 - expected)


def alpha_of_table(table: np.ndarray) -> float | None:
    """Nominal Krippendorff's α of two raters from their contingency table (every item labelled
    by both): 1 − (n − 1) · Σ_{c≠k} o_ck ÷ Σ_{c≠k} n_c·n_k, with the coincidence matrix
    o = table + tableᵀ, n_c its row sums and n = 2 × items. The closed form of what the
    `krippendorff` package computes from the raw labels (a test checks the two agree), so the
    page needs only the counts, never the pairs."""
    coincidence = table + table.T
    n = float(coincidence.sum())
    if n < 4:  # fewer than two items
        return None
    n_c = coincidence.sum(axis=1)
    expected = float(n_c.sum() ** 2 - (n_c**2).sum())
    if expected == 0:  # one label only: undefined
        return None
    observed = float(coincidence.sum() - np.trace(coincidence))
    return 1 - (n - 1) * observed / expected


@dataclass(frozen=True)
class Calibration:
    items: int  # labelled pairs: (conversation, reviewer)
    kappa: float | None
    alpha: float | None
    exact_pct: float | None
    topic_kappa: float | None
    confusion: pd.DataFrame  # judge outcome (rows) x reviewer outcome (columns), counts
    groups: pd.DataFrame  # per rubric version and judge model: pairs, kappa, alpha, exact_pct
    disagreeing: int  # pairs where the two outcomes differ (pairs(differ=True) lists them)

    def trusted(self, minimum: float) -> bool | None:
        """True or False once there are MIN_ITEMS pairs; None before (too few to say)."""
        if self.items < MIN_ITEMS or self.kappa is None:
            return None
        return self.kappa >= minimum


def _joined(filters: Filters) -> ColumnElement[bool]:
    c = O.c
    return and_(where(filters), c.decided_by == "judge", R.c.outcome.is_not(None))


def pairs(
    *, engine: Engine, filters: Filters, differ: bool = False, limit: int | None = None
) -> pd.DataFrame:
    """Reviewer outcome labels with the judge's current verdict on the same conversation, newest
    first: all of them, or (differ) only those where the two outcomes differ."""
    c = O.c
    query = (
        select(
            c.session_id,
            c.ended_at,
            c.outcome,
            c.topic,
            R.c.reviewer,
            R.c.outcome,
            R.c.topic,
            c.judge_model,
            c.rubric_version,
            c.confidence,
            c.reason,
        )
        .select_from(O.join(R, R.c.session_id == c.session_id))
        .where(_joined(filters))
        .order_by(c.ended_at.desc(), R.c.id)
        .limit(limit)
    )
    if differ:
        query = query.where(c.outcome != R.c.outcome)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=PAIR_COLUMNS)
    frame["ended_at"] = pd.to_datetime(frame["ended_at"], utc=True)
    return frame


def _counts(engine: Engine, filters: Filters) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairs counted by (judge outcome, reviewer outcome, rubric version, judge model) and by
    (judge topic, reviewer topic), from one grouped query: the few rows every measure is
    computed from, however many labels there are."""
    c = O.c
    model = func.coalesce(c.judge_model, "(none)")
    query = (
        select(c.outcome, R.c.outcome, c.rubric_version, model, c.topic, R.c.topic, func.count())
        .select_from(O.join(R, R.c.session_id == c.session_id))
        .where(_joined(filters))
        .group_by(c.outcome, R.c.outcome, c.rubric_version, model, c.topic, R.c.topic)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    frame = pd.DataFrame(
        [tuple(r) for r in rows],
        columns=[
            "judge",
            "reviewer",
            "rubric_version",
            "judge_model",
            "judge_topic",
            "reviewer_topic",
            "pairs",
        ],
    )
    topics = (
        frame.dropna(subset=["judge_topic", "reviewer_topic"])
        .groupby(["judge_topic", "reviewer_topic"], as_index=False)["pairs"]
        .sum()
        .rename(columns={"judge_topic": "judge", "reviewer_topic": "reviewer"})
    )
    return frame, topics


def _square(counts: pd.DataFrame, labels: list[str]) -> np.ndarray:
    """The counts as a labels x labels table (judge rows, reviewer columns)."""
    table = counts.pivot_table(
        index="judge", columns="reviewer", values="pairs", aggfunc="sum", fill_value=0
    )
    return table.reindex(index=labels, columns=labels, fill_value=0).to_numpy(dtype=float)


def _measures(counts: pd.DataFrame) -> tuple[float | None, float | None, float | None]:
    if counts.empty:
        return None, None, None
    labels = sorted(set(counts["judge"]) | set(counts["reviewer"]))
    table = _square(counts, labels)
    exact = 100 * float(np.trace(table) / table.sum())
    return kappa_of_table(table), alpha_of_table(table), exact


def calibration(*, engine: Engine, filters: Filters) -> Calibration:
    """The judge against the reviewers in the range, from the pairs counted in SQL; the
    disagreements themselves are pairs(differ=True), read only where they are shown."""
    counts, topics = _counts(engine, filters)
    kappa, alpha, exact = _measures(counts)
    confusion = pd.DataFrame(
        _square(counts, list(OUTCOMES)).astype(int) if not counts.empty else 0,
        index=pd.Index(list(OUTCOMES), name="judge"),
        columns=pd.Index(list(OUTCOMES), name="reviewers"),
    )
    groups = []
    for (version, model), group in counts.groupby(["rubric_version", "judge_model"], sort=True):
        k, al, ex = _measures(group)
        groups.append(
            {
                "rubric_version": version,
                "judge_model": model,
                "pairs": int(group["pairs"].sum()),
                "kappa": k,
                "alpha": al,
                "exact_pct": ex,
            }
        )
    topic_labels = sorted(set(topics["judge"]) | set(topics["reviewer"]))
    disagreeing = int(counts.loc[counts["judge"] != counts["reviewer"], "pairs"].sum())
    return Calibration(
        items=int(counts["pairs"].sum()),
        kappa=kappa,
        alpha=alpha,
        exact_pct=exact,
        topic_kappa=None if topics.empty else kappa_of_table(_square(topics, topic_labels)),
        confusion=confusion,
        groups=pd.DataFrame(
            groups,
            columns=["rubric_version", "judge_model", "pairs", "kappa", "alpha", "exact_pct"],
        ),
        disagreeing=disagreeing,
    )
