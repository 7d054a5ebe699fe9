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

import krippendorff
import numpy as np
import pandas as pd
from sqlalchemy import Engine, Table, select

from data.analytics.filters import Filters
from data.analytics.outcomes import O, where
from data.store.orm_outcomes import OUTCOMES
from data.store.orm_team import ReviewScore

R = cast(Table, ReviewScore.__table__)
MIN_ITEMS = 30  # fewer labelled pairs than this: no verdict on the judge either way
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


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's κ of two raters' labels of the same items: (p_o − p_e) ÷ (1 − p_e), where p_o is
    the share of items labelled the same and p_e the share expected by chance from each rater's
    own label frequencies. None when undefined (no items, or both raters always gave the one
    same label). Written here rather than taken from scikit-learn, a large dependency for one
    formula; tests check it against a hand-computed example."""
    if not a or len(a) != len(b):
        return None
    labels = sorted(set(a) | set(b))
    index = {label: i for i, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b, strict=True):
        table[index[x], index[y]] += 1
    n = table.sum()
    observed = np.trace(table) / n
    expected = float((table.sum(axis=1) / n) @ (table.sum(axis=0) / n))
    if math.isclose(expected, 1.0):
        return None
    return float((observed - expected) / (1 - expected))


def nominal_alpha(a: list[str], b: list[str]) -> float | None:
    """Nominal Krippendorff's α of the same pairs (the reviewer agreement's measure, nominal
    here because outcomes have no order)."""
    if len(a) < 2:
        return None
    labels = sorted(set(a) | set(b))
    index = {label: i for i, label in enumerate(labels)}
    data = np.array([[index[x] for x in a], [index[y] for y in b]], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        try:
            value = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
        except ValueError:  # one label only: undefined
            return None
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class Calibration:
    pairs: pd.DataFrame  # PAIR_COLUMNS, one row per (conversation, reviewer)
    kappa: float | None
    alpha: float | None
    exact_pct: float | None
    topic_kappa: float | None
    confusion: pd.DataFrame  # judge outcome (rows) x reviewer outcome (columns), counts
    groups: pd.DataFrame  # per rubric version and judge model: pairs, kappa, alpha, exact_pct

    @property
    def items(self) -> int:
        return len(self.pairs)

    def trusted(self, minimum: float) -> bool | None:
        """True or False once there are MIN_ITEMS pairs; None before (too few to say)."""
        if self.items < MIN_ITEMS or self.kappa is None:
            return None
        return self.kappa >= minimum

    def disagreements(self) -> pd.DataFrame:
        differ = self.pairs["judge_outcome"] != self.pairs["reviewer_outcome"]
        return self.pairs[differ].sort_values("ended_at", ascending=False).reset_index(drop=True)


def pairs(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Every reviewer outcome label with the judge's current verdict on the same conversation."""
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
        .where(where(filters), c.decided_by == "judge", R.c.outcome.is_not(None))
        .order_by(c.ended_at.desc(), R.c.id)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=PAIR_COLUMNS)
    frame["ended_at"] = pd.to_datetime(frame["ended_at"], utc=True)
    return frame


def _measures(frame: pd.DataFrame) -> tuple[float | None, float | None, float | None]:
    # tolist(): iterating an arrow-backed column one value at a time took 50 ms at 11k pairs.
    a, b = frame["judge_outcome"].tolist(), frame["reviewer_outcome"].tolist()
    exact = 100 * float(np.mean([x == y for x, y in zip(a, b, strict=True)])) if a else None
    return cohen_kappa(a, b), nominal_alpha(a, b), exact


def calibration(*, engine: Engine, filters: Filters) -> Calibration:
    frame = pairs(engine=engine, filters=filters)
    kappa, alpha, exact = _measures(frame)
    topics = frame.dropna(subset=["judge_topic", "reviewer_topic"])
    confusion = pd.crosstab(
        pd.Categorical(frame["judge_outcome"], categories=OUTCOMES),
        pd.Categorical(frame["reviewer_outcome"], categories=OUTCOMES),
        rownames=["judge"],
        colnames=["reviewers"],
        dropna=False,
    )
    groups = []
    for (version, model), group in frame.groupby(
        ["rubric_version", frame["judge_model"].fillna("(none)")], sort=True
    ):
        k, al, ex = _measures(group)
        groups.append(
            {
                "rubric_version": version,
                "judge_model": model,
                "pairs": len(group),
                "kappa": k,
                "alpha": al,
                "exact_pct": ex,
            }
        )
    return Calibration(
        pairs=frame,
        kappa=kappa,
        alpha=alpha,
        exact_pct=exact,
        topic_kappa=cohen_kappa(topics["judge_topic"].tolist(), topics["reviewer_topic"].tolist()),
        confusion=confusion,
        groups=pd.DataFrame(
            groups,
            columns=["rubric_version", "judge_model", "pairs", "kappa", "alpha", "exact_pct"],
        ),
    )
