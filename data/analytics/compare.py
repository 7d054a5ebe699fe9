"""How a page states a change against the previous period, and whether a range holds demo rows."""

from __future__ import annotations

from sqlalchemy import Engine, literal, select

from data.analytics.filters import Filters
from data.store.orm import ModelCall

# A previous period with fewer calls than this share of the current one is "nearly empty": a
# percentage against it says nothing ("+16,194 %"), so the change reads "new". A twentyfold
# growth is then "new" too, which is what it is to the reader.
NEARLY_EMPTY = 0.05


def is_new(delta: str | None) -> bool:
    """Whether a change says "new" (no comparable previous period): neither good nor bad, so a
    card shows it without the red or green of a rise or a fall."""
    return delta is not None and delta.startswith("new")


def change(
    now: float | None, before: float | None, *, calls_now: int, calls_before: int
) -> str | None:
    """The change of a figure against the previous period, as a card shows it: "+12.3% vs
    previous period"; "new" when the previous period was empty or nearly so (fewer calls than
    NEARLY_EMPTY of this period's, or a zero figure); None when there is nothing to compare
    (no figure now, or zero now and zero or nothing before)."""
    if now is None or not calls_now:
        return None
    if now == 0 and not before:  # $0 now and then (a local model): nothing changed
        return None
    if calls_before == 0:
        return "new: no calls in the previous period"
    if calls_before < NEARLY_EMPTY * calls_now or not before:
        return f"new: only {calls_before:,} calls in the previous period"
    return f"{100 * (now - before) / before:+.1f}% vs previous period"


def has_demo_rows(*, engine: Engine, filters: Filters) -> bool:
    """Whether any model call in the range is a demo row (data.store.demo): one probe of the partial
    index ix_model_calls_demo_ts, whatever the size of the table."""
    c = ModelCall.__table__.c
    query = (
        select(literal(1))
        # Rendered "demo" on Postgres and "demo = 1" on SQLite: the index predicates.
        .where(c.demo, c.ts >= filters.start, c.ts < filters.end)
        .limit(1)
    )
    with engine.connect() as connection:
        return connection.execute(query).first() is not None
