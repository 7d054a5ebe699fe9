"""Cost page figures: one function per figure, used by the page, its CSV export and the tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine, func, select

from data.analytics import sessions
from data.analytics.filters import Filters
from data.analytics.freshness import ensure_fresh, fresh_view
from data.analytics.parallel_reads import gather
from data.analytics.source import isum, source_for, to_frame
from data.analytics.timebucket import bucket
from data.integrations.prices import price_call
from data.store.orm import ModelCall
from data.store.orm_rollups import RollupHourly

C = ModelCall.__table__.c


@dataclass(frozen=True, slots=True)
class CostTotals:
    calls: int
    input_tokens: int  # includes cached input tokens, as providers report them
    cached_input_tokens: int
    output_tokens: int
    cost_usd: float  # sum over priced calls only
    unpriced_calls: int  # calls whose cost is unknown: never counted as 0
    errors: int
    sessions: int
    users: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_per_session(self) -> float | None:
        return self.cost_usd / self.sessions if self.sessions else None

    @property
    def cost_per_user(self) -> float | None:
        return self.cost_usd / self.users if self.users else None


def cost_totals(*, engine: Engine, filters: Filters) -> CostTotals:
    """Calls, tokens, priced cost, conversations and users under `filters` (three reads, run
    at once)."""
    with fresh_view(engine):
        return _totals(*gather(*_totals_reads(engine, filters)))


def _totals_reads(engine: Engine, filters: Filters) -> list[Callable[[], Any]]:
    return [
        lambda: _call_sums(engine, filters),
        lambda: sessions.count_sessions(engine=engine, filters=filters),
        lambda: sessions.count_users(engine=engine, filters=filters),
    ]


def _totals(sums: dict[str, Any], conversations: int, users: int) -> CostTotals:
    return CostTotals(**sums, sessions=conversations, users=users)


def _call_sums(engine: Engine, filters: Filters) -> dict[str, Any]:
    """Every CostTotals field but the distinct conversations and users."""
    src = source_for(engine, filters)
    c = src.c
    query = select(
        func.coalesce(src.calls(), 0),
        func.coalesce(isum(c.input_tokens), 0),
        func.coalesce(isum(c.cached_input_tokens), 0),
        func.coalesce(isum(c.output_tokens), 0),
        func.coalesce(func.sum(c.cost_usd), 0.0),
        src.count_if(c.cost_status == "unknown"),
        src.count_if(c.status == "error"),
    ).where(src.where(filters))
    with engine.connect() as connection:
        row = connection.execute(query).one()
    return {
        "calls": int(row[0]),
        "input_tokens": int(row[1]),
        "cached_input_tokens": int(row[2]),
        "output_tokens": int(row[3]),
        "cost_usd": float(row[4]),
        "unpriced_calls": int(row[5]),
        "errors": int(row[6]),
    }


OVER_TIME_COLUMNS = [
    "bucket",
    "model",
    "calls",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "tokens",
    "cost_usd",
]


def cost_over_time(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Per time bucket (filters.unit) and model: calls, token types and priced cost."""
    src = source_for(engine, filters)
    c = src.c
    period = bucket(c[src.time], dialect=engine.dialect.name, unit=filters.unit).label("bucket")
    query = (
        select(
            period,
            c.model,
            src.calls().label("calls"),
            isum(c.input_tokens).label("input_tokens"),
            isum(c.cached_input_tokens).label("cached_input_tokens"),
            isum(c.output_tokens).label("output_tokens"),
            func.coalesce(func.sum(c.cost_usd), 0.0).label("cost_usd"),
        )
        .where(src.where(filters))
        .group_by(period, c.model)
        .order_by(period, c.model)
    )
    frame = to_frame(engine, query, [c for c in OVER_TIME_COLUMNS if c != "tokens"])
    frame["bucket"] = pd.to_datetime(frame["bucket"], utc=True)
    frame["tokens"] = frame["input_tokens"] + frame["output_tokens"]
    return frame[OVER_TIME_COLUMNS]


def tokens_by_type(frame: pd.DataFrame) -> pd.DataFrame:
    """Long form of cost_over_time for a stacked chart: uncached input, cached input, output."""
    wide = frame.groupby("bucket", as_index=False)[
        ["input_tokens", "cached_input_tokens", "output_tokens"]
    ].sum()
    wide["Input (uncached)"] = wide["input_tokens"] - wide["cached_input_tokens"]
    wide = wide.rename(columns={"cached_input_tokens": "Cached input", "output_tokens": "Output"})
    return wide.melt(
        id_vars="bucket",
        value_vars=["Input (uncached)", "Cached input", "Output"],
        var_name="type",
        value_name="tokens",
    )


BY_MODEL_COLUMNS = [
    "model",
    "provider",
    "calls",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "tokens",
    "cost_usd",
    "cost_per_1k_calls",
    "unpriced_calls",
    "errors",
]


def cost_by_model(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """One row per model: calls, token types, priced cost, unpriced calls, cost per 1k calls."""
    src = source_for(engine, filters)
    c = src.c
    query = (
        select(
            c.model,
            c.provider,
            src.calls().label("calls"),
            isum(c.input_tokens).label("input_tokens"),
            isum(c.cached_input_tokens).label("cached_input_tokens"),
            isum(c.output_tokens).label("output_tokens"),
            func.coalesce(func.sum(c.cost_usd), 0.0).label("cost_usd"),
            src.count_if(c.cost_status == "unknown").label("unpriced_calls"),
            src.count_if(c.status == "error").label("errors"),
        )
        .where(src.where(filters))
        .group_by(c.model, c.provider)
        .order_by(func.coalesce(func.sum(c.cost_usd), 0.0).desc(), c.model)
    )
    frame = to_frame(
        engine, query, [c for c in BY_MODEL_COLUMNS if c not in ("tokens", "cost_per_1k_calls")]
    )
    frame["tokens"] = frame["input_tokens"] + frame["output_tokens"]
    frame["cost_per_1k_calls"] = (1000 * frame["cost_usd"] / frame["calls"]).astype(float)
    return frame[BY_MODEL_COLUMNS]


USER_COLUMNS = ["user", "sessions", "calls", "tokens", "cost_usd", "unpriced_calls"]


def cost_by_user(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Every user (not a top 5): sessions, calls, tokens, priced cost, unpriced calls, most
    expensive first. The page reads it a page at a time (data.analytics.sessions.user_page)."""
    return sessions.all_users(engine=engine, filters=filters)[USER_COLUMNS]


def cost_by_session(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """Every session: its user, first and last call, turns, calls, tokens and priced cost,
    most expensive first. The page reads it a page at a time
    (data.analytics.sessions.session_page)."""
    return sessions.all_sessions(engine=engine, filters=filters)[list(sessions.SESSION_VIEW)]


def unpriced_calls(*, engine: Engine, filters: Filters, limit: int = 500) -> pd.DataFrame:
    """The calls whose cost is unknown, newest first (their cost is not in any total)."""
    query = (
        select(
            C.ts,
            C.model,
            C.provider,
            C.user_id,
            C.session_id,
            C.turn,
            C.input_tokens,
            C.output_tokens,
        )
        .where(filters.conditions(), C.cost_status == "unknown")
        .order_by(C.ts.desc())
        .limit(limit)
    )
    cols = [
        "ts",
        "model",
        "provider",
        "user_id",
        "session_id",
        "turn",
        "input_tokens",
        "output_tokens",
    ]
    frame = to_frame(engine, query, cols)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="mixed")
    return frame


def what_if(
    *, engine: Engine, filters: Filters, target_model: str, provider: str = "openai"
) -> pd.DataFrame:
    """Re-price the filtered traffic as if every call had gone to `target_model`."""
    by_model = cost_by_model(engine=engine, filters=filters)
    return reprice(by_model, target_model=target_model, provider=provider)


def reprice(by_model: pd.DataFrame, *, target_model: str, provider: str = "openai") -> pd.DataFrame:
    """The what-if table from a cost_by_model table, so a page that shows both reads it once.

    Token sums are taken per model and priced with the target's rates (genai-prices); a
    model's rates are linear in tokens, so pricing the sums equals pricing each call."""
    rows = []
    for row in by_model.itertuples(index=False):
        price = price_call(
            provider=provider,
            model=target_model,
            input_tokens=int(row.input_tokens),
            cached_input_tokens=int(row.cached_input_tokens),
            output_tokens=int(row.output_tokens),
        )
        rows.append(
            {
                "model": row.model,
                "calls": int(row.calls),
                "actual_cost_usd": float(row.cost_usd),
                "unpriced_calls": int(row.unpriced_calls),
                "what_if_cost_usd": price.cost_usd,
            }
        )
    frame = pd.DataFrame(
        rows, columns=["model", "calls", "actual_cost_usd", "unpriced_calls", "what_if_cost_usd"]
    )
    frame["difference_usd"] = frame["what_if_cost_usd"] - frame["actual_cost_usd"]
    return frame


@dataclass(frozen=True, slots=True)
class CostPageData:
    """Every figure of one cost page view but the what-if, which depends on a widget (reprice
    `by_model` for it), and the per-user and per-session tables, which the page reads a page
    at a time (data.analytics.sessions)."""

    totals: CostTotals
    previous: CostTotals  # the period of the same length just before, for the deltas
    over_time: pd.DataFrame
    by_model: pd.DataFrame


def page_data(*, engine: Engine, filters: Filters) -> CostPageData:
    """The cost page's figures: sums from the hourly rollup, conversations and users from the
    per-session and per-user rollups. Its eight reads run at once (data.analytics.parallel_reads),
    after one refresh."""
    with fresh_view(engine):
        results = gather(
            *_totals_reads(engine, filters),
            *_totals_reads(engine, filters.previous()),
            lambda: cost_over_time(engine=engine, filters=filters),
            lambda: cost_by_model(engine=engine, filters=filters),
        )
    return CostPageData(
        totals=_totals(*results[0:3]),
        previous=_totals(*results[3:6]),
        over_time=results[6],
        by_model=results[7],
    )


def known_models(*, engine: Engine) -> list[str]:
    """Every model that has a recorded call (for the model filter)."""
    ensure_fresh(engine)
    r = RollupHourly.__table__.c
    with engine.connect() as connection:
        return list(connection.execute(select(r.model).distinct().order_by(r.model)).scalars())


def has_calls(*, engine: Engine) -> bool:
    """Whether any model call was ever recorded (tells an empty range from an empty database)."""
    with engine.connect() as connection:
        return connection.execute(select(C.id).limit(1)).first() is not None
