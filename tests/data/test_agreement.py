"""Reviewer agreement against independent computations: Krippendorff's published example
(ordinal alpha 0.815), a separate implementation of the coincidence-matrix formula for every
reviewer pair, and one pair worked out by hand."""

from __future__ import annotations

from itertools import combinations, permutations

import numpy as np
import pandas as pd
import pytest

from data.analytics.agreement import agreement, disagreements

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C: four observers,
# twelve units, values 1-5, None where an observer gave no value. Published: ordinal alpha 0.815
# (nominal 0.743, interval 0.849).
PUBLISHED = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def long(data: dict[str, list[int | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (unit + 1, reviewer, value, f"s{unit + 1}")
            for reviewer, values in data.items()
            for unit, value in enumerate(values)
            if value is not None
        ],
        columns=["item_id", "reviewer", "score", "session_id"],
    )


def reference_ordinal_alpha(scores: pd.DataFrame) -> float:
    """Krippendorff's ordinal alpha written out from the definition: the coincidence matrix
    o[c][k] (each ordered pair of values within a unit, weighted 1 / (m_u - 1)), the ordinal
    distance delta(c, k) = (sum of n_g for g from c to k - (n_c + n_k) / 2) ** 2, and
    alpha = 1 - (n - 1) * sum(o * delta) / sum(n_c * n_k * delta)."""
    values = range(1, 6)
    o = {(c, k): 0.0 for c in values for k in values}
    for _, unit in scores.groupby("item_id"):
        scored = list(unit["score"])
        if len(scored) < 2:
            continue
        for i, j in permutations(range(len(scored)), 2):
            o[(scored[i], scored[j])] += 1 / (len(scored) - 1)
    n_c = {c: sum(o[(c, k)] for k in values) for c in values}
    n = sum(n_c.values())

    def delta(c: int, k: int) -> float:
        low, high = min(c, k), max(c, k)
        return (sum(n_c[g] for g in range(low, high + 1)) - (n_c[c] + n_c[k]) / 2) ** 2

    observed = sum(o[(c, k)] * delta(c, k) for c in values for k in values)
    expected = sum(n_c[c] * n_c[k] * delta(c, k) for c in values for k in values)
    return 1 - (n - 1) * observed / expected


def test_the_published_example() -> None:
    scores = long(PUBLISHED)
    report = agreement(scores)
    assert report.items == 11  # unit 12 has a single value: not pairable
    assert report.reviewers == 4
    assert report.alpha is not None and round(report.alpha, 3) == 0.815
    assert report.alpha == pytest.approx(reference_ordinal_alpha(scores), abs=1e-12)


def test_every_pair_against_the_reference() -> None:
    scores = long(PUBLISHED)
    pairs = agreement(scores).pairs.set_index(["reviewer_a", "reviewer_b"])
    assert list(pairs.index) == list(combinations("ABCD", 2))
    for a, b in combinations("ABCD", 2):
        both = scores[scores["reviewer"].isin([a, b])]
        shared = both.groupby("item_id").filter(lambda unit: len(unit) == 2)
        wide = shared.pivot(index="item_id", columns="reviewer", values="score")
        diff = (wide[a] - wide[b]).abs()
        row = pairs.loc[(a, b)]
        assert row["items"] == len(wide)
        assert row["alpha"] == pytest.approx(reference_ordinal_alpha(shared), abs=1e-12)
        assert row["exact_pct"] == pytest.approx(100 * (diff == 0).mean())
        assert row["within_one_pct"] == pytest.approx(100 * (diff <= 1).mean())


def test_one_pair_by_hand() -> None:
    """alice 1, 2, 4, 5 and bob 1, 3, 4, 5 on four items (carol scored other items only).

    Coincidences: o(1,1) = 2, o(2,3) = o(3,2) = 1, o(4,4) = 2, o(5,5) = 2; so n_1..n_5 =
    2, 1, 1, 2, 2 and n = 8. Ordinal distances: d(2,3) = (1 + 1 - 1)^2 = 1, so the observed
    sum is o(2,3) d + o(3,2) d = 2. Expected sum over ordered pairs: 2 x (4.5 + 12.5 + 64 + 144
    + 1 + 12.5 + 40.5 + 4.5 + 24.5 + 16) = 648. Alpha = 1 - 7 x 2 / 648 = 0.978395...
    Same score on 3 of 4 items (75 %), at most one apart on all 4 (100 %)."""
    scores = long(
        {
            "alice": [1, 2, 4, 5, None, None],
            "bob": [1, 3, 4, 5, None, None],
            "carol": [None, None, None, None, 2, 2],
            "dave": [None, None, None, None, 1, 4],
        }
    )
    report = agreement(scores)
    pairs = report.pairs.set_index(["reviewer_a", "reviewer_b"])
    assert list(pairs.index) == [("alice", "bob"), ("carol", "dave")]
    alice_bob = pairs.loc[("alice", "bob")]
    assert alice_bob["items"] == 4
    assert alice_bob["alpha"] == pytest.approx(1 - 14 / 648)
    assert (alice_bob["exact_pct"], alice_bob["within_one_pct"]) == (75.0, 100.0)
    assert report.items == 6 and report.reviewers == 4


def test_undefined_alpha_is_none() -> None:
    same = long({"alice": [3, 3, 3], "bob": [3, 3, 3]})
    report = agreement(same)
    assert report.alpha is None and report.items == 3
    assert report.pairs["alpha"].isna().all()
    assert report.pairs[["exact_pct", "within_one_pct"]].values.tolist() == [[100.0, 100.0]]
    single = long({"alice": [1, 2], "bob": [None, None]})
    empty = agreement(single)
    assert (empty.items, empty.reviewers, empty.alpha, len(empty.pairs)) == (0, 0, None, 0)
    assert disagreements(single).empty


def test_disagreements_sorted_by_spread() -> None:
    frame = disagreements(long(PUBLISHED))
    assert frame.iloc[0].tolist() == [6, "s6", "A 1, B 2, C 3, D 4", 3]
    assert list(frame["spread"]) == sorted(frame["spread"], reverse=True)
    assert len(frame) == 11 and 12 not in set(frame["item_id"])
    spread = long(PUBLISHED).groupby("item_id")["score"].agg(np.ptp)
    assert frame.set_index("item_id")["spread"].to_dict() == spread.drop(12).to_dict()
