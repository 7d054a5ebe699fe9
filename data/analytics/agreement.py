"""How much reviewers agree: Krippendorff's alpha for ordinal scores (the maintained
`krippendorff` package), overall and per reviewer pair, and the items they disagree on most."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import krippendorff
import numpy as np
import pandas as pd

SCORES = np.arange(1, 6)  # the value domain: reviewer scores 1-5
PAIR_COLUMNS = ["reviewer_a", "reviewer_b", "items", "alpha", "exact_pct", "within_one_pct"]


@dataclass(frozen=True)
class AgreementReport:
    items: int  # items with two or more scores
    reviewers: int  # reviewers who scored at least one of them
    alpha: float | None  # None when undefined (no item with two scores, or no variation)
    pairs: pd.DataFrame  # reviewer_a, reviewer_b, items, alpha, exact_pct, within_one_pct


def _alpha(counts: np.ndarray) -> float | None:
    """Ordinal Krippendorff's alpha of an items x score values count matrix (items with fewer
    than two scores left out), or None where it is undefined."""
    counts = counts[counts.sum(axis=1) >= 2]
    if not len(counts):
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        value = float(
            krippendorff.alpha(
                value_counts=counts,
                value_domain=SCORES,
                level_of_measurement="ordinal",
            )
        )
    return None if math.isnan(value) else value


def _counts(items: np.ndarray, scores: np.ndarray, n_items: int) -> np.ndarray:
    """Items x score values: how many of the scores (at row `items`) have each value."""
    values = scores.astype(int) - int(SCORES[0])
    inside = (values >= 0) & (values < len(SCORES))
    counts = np.zeros((n_items, len(SCORES)), dtype=int)
    np.add.at(counts, (items[inside], values[inside]), 1)
    return counts


def _multi(scores: pd.DataFrame) -> pd.DataFrame:
    """The scores of items that two or more reviewers scored."""
    per_item = scores.groupby("item_id")["reviewer"].transform("nunique")
    return scores[per_item >= 2]


def agreement(scores: pd.DataFrame) -> AgreementReport:
    """Ordinal Krippendorff's alpha over the items with two or more scores, overall and for
    every reviewer pair over the items both scored, with the share of those items on which the
    pair gave the same score and scores at most one apart. `scores` has item_id, reviewer and
    score (one row per reviewer and item, as data.workflows.review.scores_frame gives)."""
    multi = _multi(scores[["item_id", "reviewer", "score"]])
    # Items x reviewers, NaN where a reviewer did not score the item; each pair is then two
    # columns of one numpy array (pandas' per-pair dropna and melt took about 2 ms a pair).
    wide = multi.pivot(index="item_id", columns="reviewer", values="score")
    reviewers = sorted(wide.columns)
    values = wide[reviewers].to_numpy(dtype=float)
    scored = ~np.isnan(values)
    rows = []
    for i, j in combinations(range(len(reviewers)), 2):
        both = scored[:, i] & scored[:, j]
        n = int(both.sum())
        if not n:
            continue
        a, b = values[both, i], values[both, j]
        diff = np.abs(a - b)
        pair = np.arange(n)
        counts = _counts(np.concatenate([pair, pair]), np.concatenate([a, b]), n)
        rows.append(
            (
                reviewers[i],
                reviewers[j],
                n,
                _alpha(counts),
                100.0 * float((diff == 0).mean()),
                100.0 * float((diff <= 1).mean()),
            )
        )
    cells = np.nonzero(scored)
    return AgreementReport(
        items=int(multi["item_id"].nunique()),
        reviewers=int(multi["reviewer"].nunique()),
        alpha=_alpha(_counts(cells[0], values[cells], len(values))),
        pairs=pd.DataFrame(rows, columns=PAIR_COLUMNS),
    )


def disagreements(scores: pd.DataFrame) -> pd.DataFrame:
    """Items with two or more scores, largest spread (max - min) first, then by item:
    item_id, session_id, scores ("alice 2, bob 5", by reviewer), spread."""
    multi = _multi(scores).sort_values(["item_id", "reviewer"])
    columns = ["item_id", "session_id", "scores", "spread"]
    if multi.empty:
        return pd.DataFrame(columns=columns)
    labels = multi["reviewer"].astype(str) + " " + multi["score"].astype(int).astype(str)
    grouped = multi.assign(label=labels).groupby("item_id", sort=True)
    frame = pd.DataFrame(
        {
            "session_id": grouped["session_id"].first(),
            "scores": grouped["label"].agg(", ".join),
            "spread": (grouped["score"].max() - grouped["score"].min()).astype(int),
        }
    ).reset_index()
    return frame.sort_values(["spread", "item_id"], ascending=[False, True], ignore_index=True)[
        columns
    ]
