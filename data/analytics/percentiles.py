"""Percentiles computed inside the database, identical on SQLite and Postgres.

Postgres has `percentile_cont`; SQLite has none, so there the rank of each value within its
group comes from window functions, the database returns the two neighbours of each percentile,
and they are interpolated exactly as `percentile_cont` does (linear, 1 + q * (n - 1))."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, Float, Integer, case, cast, func, select
from sqlalchemy.sql.elements import ColumnElement


def percentiles(
    *,
    engine: Engine,
    value: ColumnElement[Any],
    groups: Sequence[ColumnElement[Any]],
    where: ColumnElement[bool],
    quantiles: Sequence[float] = (0.5, 0.95, 0.99),
    connection: Connection | None = None,
) -> pd.DataFrame:
    """One row per group with `n` and a column `p50`, `p95`, ... per quantile."""
    names = [str(getattr(g, "key", None) or f"g{i}") for i, g in enumerate(groups)]
    labels = [f"p{round(q * 100)}" for q in quantiles]
    if engine.dialect.name == "postgresql":
        query = (
            select(
                *groups,
                func.count(value).label("n"),
                *[
                    func.percentile_cont(q).within_group(value).label(label)
                    for q, label in zip(quantiles, labels, strict=True)
                ],
            )
            .where(where, value.is_not(None))
            .group_by(*groups)
            .order_by(*groups)
        )
        rows = _fetch(engine, connection, query)
        return pd.DataFrame(rows, columns=[*names, "n", *labels]).astype(
            {label: float for label in labels}
        )

    ranked = (
        select(
            *groups,
            value.label("v"),
            func.row_number().over(partition_by=list(groups), order_by=value).label("rn"),
            func.count().over(partition_by=list(groups)).label("n"),
        )
        .where(where, value.is_not(None))
        .subquery()
    )
    sub_groups = [ranked.c[name] for name in names]
    columns = []
    for q, label in zip(quantiles, labels, strict=True):
        position = 1 + q * (cast(ranked.c.n, Float) - 1)
        low = cast(position, Integer)  # floor, since position >= 1
        high = low + case((position > low, 1), else_=0)
        columns += [
            func.max(case((ranked.c.rn == low, ranked.c.v))).label(f"{label}_lo"),
            func.max(case((ranked.c.rn == high, ranked.c.v))).label(f"{label}_hi"),
            func.max(position - low).label(f"{label}_frac"),
        ]
    query = (
        select(*sub_groups, func.max(ranked.c.n).label("n"), *columns)
        .group_by(*sub_groups)
        .order_by(*sub_groups)
    )
    frame = pd.DataFrame(_fetch(engine, connection, query, mappings=True))
    if frame.empty:
        return pd.DataFrame(columns=[*names, "n", *labels])
    for label in labels:
        lo, hi, frac = (frame[f"{label}_{s}"].astype(float) for s in ("lo", "hi", "frac"))
        frame[label] = lo + frac * (hi - lo)
    return frame[[*names, "n", *labels]]


def _fetch(
    engine: Engine, connection: Connection | None, query: Any, mappings: bool = False
) -> list[Any]:
    """Run on the caller's connection (inside its transaction) or on a fresh one."""

    def go(conn: Connection) -> list[Any]:
        result = conn.execute(query)
        return list(result.mappings().all() if mappings else result.all())

    if connection is not None:
        return go(connection)
    with engine.connect() as own:
        return go(own)
