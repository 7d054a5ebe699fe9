"""How much reviewers agree: Krippendorff's alpha for ordinal scores (the `krippendorff`
package), overall and per reviewer pair, and the items they disagree on most."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class AgreementReport:
    items: int  # items with two or more scores
    reviewers: int
    alpha: float | None  # None when undefined (fewer than two items or no variation)
    pairs: pd.DataFrame  # reviewer_a, reviewer_b, items, alpha, exact_pct, within_one_pct


def agreement(scores: pd.DataFrame) -> AgreementReport:
    """Ordinal Krippendorff's alpha over the items with two or more scores, overall and for
    every reviewer pair (over the items both scored). `scores` has item_id, reviewer, score."""
    raise NotImplementedError


def disagreements(scores: pd.DataFrame) -> pd.DataFrame:
    """Items with two or more scores, largest spread (max - min) first: item_id, session_id,
    scores ("alice 2, bob 5"), spread."""
    raise NotImplementedError
