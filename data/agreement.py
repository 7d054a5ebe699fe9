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


def ordinal_alpha(scores: pd.DataFrame) -> float | None:
    """Ordinal Krippendorff's alpha of `scores` (item_id, score; one row per reviewer and item),
    or None where alpha is undefined: no item with two scores, or every score the same."""
    # Items x score values, counted with numpy (pd.crosstab took about 8 ms a call, and the
    # report makes one per reviewer pair).
    scores = scores.dropna(subset=["item_id", "score"])
    items, _ = pd.factorize(scores["item_id"])
    values = scores["score"].to_numpy(dtype=int) - int(SCORES[0])
    inside = (values >= 0) & (values < len(SCORES))
    counts = np.zeros((items.max() + 1 if len(items) else 0, len(SCORES)), dtype=int)
    np.add.at(counts, (items[inside], values[inside]), 1)
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


def _multi(scores: pd.DataFrame) -> pd.DataFrame:
    """The scores of items that two or more reviewers scored."""
    per_item = scores.groupby("item_id")["reviewer"].transform("nunique")
    return scores[per_item >= 2]


def agreement(scores: pd.DataFrame) -> AgreementReport:
    """Ordinal Krippendorff's alpha over the items with two or more scores, overall and for
    every reviewer pair over the items both scored, with the share of those items on which the
    pair gave the same score and scores at most one apart. `scores` has item_id, reviewer and
    score (one row per reviewer and item, as data.review.scores_frame gives)."""
    multi = _multi(scores[["item_id", "reviewer", "score"]])
    wide = multi.pivot(index="item_id", columns="reviewer", values="score")
    rows = []
    for a, b in combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        if both.empty:
            continue
        diff = (both[a] - both[b]).abs()
        long = both.reset_index().melt(id_vars="item_id", value_name="score")
        rows.append(
            (
                a,
                b,
                len(both),
                ordinal_alpha(long),
                100.0 * float((diff == 0).mean()),
                100.0 * float((diff <= 1).mean()),
            )
        )
    return AgreementReport(
        items=int(multi["item_id"].nunique()),
        reviewers=int(multi["reviewer"].nunique()),
        alpha=ordinal_alpha(multi),
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
