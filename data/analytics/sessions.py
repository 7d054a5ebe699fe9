"""A session's and a user's totals over a range: the one definition every page, table and export
uses (turns, calls, tokens, cost, unpriced calls, summarizations, peak context % of successful
chat calls, p95 chat latency), read a page at a time from the per-session and per-user rollups.

How a range is answered exactly from rollups that hold each session's all-time totals:

- a session whose first and last call both fall inside [start, end) is one rollup_sessions row;
- a session that straddles start or end (few: sessions last minutes) is summed from its
  rollup_session_hourly rows inside the range (ranges are whole hours, so this is exact);
- a session with no call in the range has no hourly rows there and drops out.

Users work the same way one level up: a user whose first and last call are inside the range
is one rollup_users row, the others are summed from their sessions in the range. With several
models in the filter every row is summed from the per-model rows (a session counted once)."""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal

import pandas as pd
from sqlalchemy import (
    Engine,
    String,
    and_,
    exists,
    func,
    literal,
    select,
)

from data.analytics.filters import Filters
from data.analytics.freshness import ensure_fresh, fresh_view
from data.analytics.measures import METRICS
from data.analytics.parallel_reads import gather
from data.analytics.percentiles import percentiles
from data.analytics.session_sql import (
    MANY_STRADDLING,
    RS,
    RU,
    C,
    H,
    _contains,
    _order,
    _page_straddlers,
    _session_parts,
    _straddlers,
    _user_parts,
    _user_where,
    session_relation,
    user_relation,
)

SESSION_FIELDS = [
    "session",
    "user",
    "model",
    "first_call",
    "last_call",
    "turns",
    "calls",
    "chat_calls",
    "tokens",
    "cost_usd",
    "unpriced_calls",
    "summarizations",
    "peak_context_percent",
    "latency_p95_ms",
    "partial",
]
USER_FIELDS = ["user", "sessions", "calls", "tokens", "cost_usd", "unpriced_calls"]
# What a table may be sorted by (a column name -> the relation's column); the per-session
# ones each have an index (migration 0010), so the top page is an index range scan.
# The per-session table as the Cost page and its export show it.
SESSION_VIEW = (
    "session",
    "user",
    "first_call",
    "last_call",
    "turns",
    "calls",
    "tokens",
    "cost_usd",
    "unpriced_calls",
)
SESSION_SORTS = (
    *SESSION_VIEW,
    "summarizations",
    "peak_context_percent",
)
USER_SORTS = tuple(USER_FIELDS)
MAX_PAGE = 1000
MAX_SEARCH = 128


class TableInputError(ValueError):
    """A sort column, page or search the tables cannot serve; the message is shown as is."""


def _within(engine: Engine, nth: str, last: str, descending: bool) -> bool:
    """Whether `nth` comes no later than `last` in the database's order of ids (its collation,
    which the pages' ORDER BY used; Python's order of strings may differ)."""
    a, b = literal(nth, String), literal(last, String)
    with engine.connect() as connection:
        return bool(connection.execute(select(a >= b if descending else a <= b)).scalar_one())


def _clean(sort: str, allowed: tuple[str, ...], offset: int, limit: int, search: str | None) -> str:
    if sort not in allowed:
        raise TableInputError(f"Cannot sort by {sort!r}; choose one of {', '.join(allowed)}.")
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise TableInputError(f"A page starts at 0 or later and has 1 to {MAX_PAGE} rows.")
    text = (search or "").strip()
    if len(text) > MAX_SEARCH:
        raise TableInputError(f"A search is at most {MAX_SEARCH} characters.")
    return text


@dataclass(frozen=True, slots=True)
class Page:
    rows: pd.DataFrame
    total: int  # rows in the whole table (after the search)
    offset: int


def _frame(engine: Engine, query: Any, columns: list[str]) -> pd.DataFrame:
    with engine.connect() as connection:
        rows = [tuple(r) for r in connection.execute(query)]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    for name in ("first_call", "last_call"):
        if name in frame:
            frame[name] = pd.to_datetime(frame[name], utc=True, format="mixed")
    for name in ("cost_usd", "peak_context_percent", "latency_p95_ms"):
        if name in frame:
            frame[name] = frame[name].astype(float)
    if "partial" in frame:
        frame["partial"] = frame["partial"].astype(bool)
    return frame


def _scans_in_turn(engine: Engine) -> bool:
    """Whether a searched page and its count (two scans) run one after the other: on SQLite,
    which runs inside this process (data.analytics.parallel_reads.gather)."""
    return engine.dialect.name == "sqlite"


def session_page(
    *,
    engine: Engine,
    filters: Filters,
    sort: str = "cost_usd",
    descending: bool = True,
    offset: int = 0,
    limit: int = 50,
    search: str | None = None,
    total: int | None = None,
) -> Page:
    """One page of the per-session table, sorted server-side (ties by session id). `total`:
    the table's row count when the caller has it already (the cost page's totals count the
    same sessions); it is used only without a search."""
    text = _clean(sort, SESSION_SORTS, offset, limit, search)
    rel = session_relation(filters, search=text or None, top=(sort, descending, offset + limit))
    query = (
        select(*[rel.c[c] for c in SESSION_FIELDS])
        .order_by(*_order(rel, sort, descending, "session"))
        .offset(offset)
        .limit(limit)
    )
    with fresh_view(engine):
        if total is not None and not text:
            return Page(rows=_frame(engine, query, SESSION_FIELDS), total=total, offset=offset)
        # The page and its count at once (data.analytics.parallel_reads).
        rows, total = gather(
            lambda: _frame(engine, query, SESSION_FIELDS),
            lambda: count_sessions(engine=engine, filters=filters, search=text),
            inline=_scans_in_turn(engine),
        )
    return Page(rows=rows, total=total, offset=offset)


def user_page(
    *,
    engine: Engine,
    filters: Filters,
    sort: str = "cost_usd",
    descending: bool = True,
    offset: int = 0,
    limit: int = 50,
    search: str | None = None,
    total: int | None = None,
) -> Page:
    """One page of the per-user table, sorted server-side (ties by user id). `total`: the
    table's row count when the caller has it already (the cost page's totals count the same
    users); it is used only without a search."""
    text = _clean(sort, USER_SORTS, offset, limit, search)

    def page(straddlers: list[str] | None, top: bool) -> pd.DataFrame:
        rel = user_relation(
            filters,
            search=text or None,
            straddlers=straddlers,
            top=(sort, descending, offset + limit) if top else None,
        )
        query = (
            select(*[rel.c[c] for c in USER_FIELDS])
            .order_by(*_order(rel, sort, descending, "user"))
            .offset(offset)
            .limit(limit)
        )
        return _frame(engine, query, USER_FIELDS)

    def rows() -> pd.DataFrame:
        n = offset + limit
        straddlers, top, check = _page_straddlers(
            engine, filters, text or None, sort, descending, n
        )
        frame = page(straddlers, top)
        if check is None:
            return frame
        if len(frame) == limit and _within(engine, frame["user"].iloc[-1], check.last, descending):
            return frame  # no straddler after the last one summed can reach the page
        every = _straddlers(engine, filters, text or None, bound=check.bound)
        return page(every, every is not None)

    with fresh_view(engine):
        if total is not None and not text:
            return Page(rows=rows(), total=total, offset=offset)
        # The page and its count at once (data.analytics.parallel_reads).
        frame, total = gather(
            rows,
            lambda: count_users(engine=engine, filters=filters, search=text),
            inline=_scans_in_turn(engine),
        )
    return Page(rows=frame, total=total, offset=offset)


def _count(engine: Engine, arms: list[Any]) -> int:
    """Rows of a union, counted arm by arm over a narrow select: the inside arm then reads
    only the (model, first_call, last_call) index, not every column of every row."""
    total = 0
    with engine.connect() as connection:
        for arm in arms:
            narrow = arm.with_only_columns(literal(1), maintain_column_froms=True).subquery()
            total += int(connection.execute(select(func.count()).select_from(narrow)).scalar_one())
    return total


def count_sessions(*, engine: Engine, filters: Filters, search: str | None = None) -> int:
    """Sessions with a call in the range under `filters` (and `search`)."""
    ensure_fresh(engine)
    return _count(engine, list(_session_parts(filters, (search or "").strip() or None, None)))


def count_users(*, engine: Engine, filters: Filters, search: str | None = None) -> int:
    """Users with a call in the range under `filters` (and `search`).

    A user's rollup row holds their first and last call. A user whose span overlaps the range
    has a call in it, unless the span covers the whole range and every call falls outside it:
    a user with a last call inside the range, or a first call inside it, has that call in it.
    So the count is the overlapping rollup rows (one index range) less the users who span the
    range with no call in it (one probe of the hourly rollup's (user_id, hour) index each, for
    the few users who span it; none for a range that ends now; the rollup, so that the count
    holds after retention deleted old raw rows). When more than MANY_STRADDLING users span
    it, the range's hourly rollup rows are counted distinct by user instead. Measured at 10M calls:
    90 days, 70 -> 17 ms; 7 days, 61 -> 18 ms; the 7 days before those, where 13,940 users
    span the range, 72 ms before, 76 ms probed (the previous way summed or probed every
    straddling user)."""
    ensure_fresh(engine)
    text = (search or "").strip() or None
    if filters.session or len(filters.models) > 1:
        return _count(engine, _user_parts(filters, text, None))
    where = _user_where(filters, text)
    overlapping = select(func.count()).where(
        *where, RU.last_call >= filters.start, RU.first_call < filters.end
    )
    spanning = (
        select(RU.user_id)
        .where(*where, RU.first_call < filters.start, RU.last_call >= filters.end)
        .subquery()
    )
    # A call in the range is an hourly rollup row in it (ranges are whole hours); the rollup,
    # not model_calls, so that the count holds after retention deleted the old raw rows.
    in_range = [H.user_id == spanning.c.user_id, H.hour >= filters.start, H.hour < filters.end]
    if filters.models:
        in_range.append(H.model == filters.models[0])
    gaps = select(func.count()).select_from(spanning).where(~exists().where(*in_range))
    many = select(func.count()).select_from(
        select(spanning.c.user_id).limit(MANY_STRADDLING + 1).subquery()
    )
    with engine.connect() as connection:
        if int(connection.execute(many).scalar_one()) > MANY_STRADDLING:
            # So many users span it that the range is short beside their spans: its hourly
            # rows, distinct by user, are fewer than the rows probed or summed otherwise
            # (10M calls, the 7 days before the last 7, 13,940 spanning users: 56 -> 11 ms).
            hourly = [H.hour >= filters.start, H.hour < filters.end]
            if filters.models:
                hourly.append(H.model == filters.models[0])
            if filters.user:
                hourly.append(H.user_id == filters.user)
            if text:
                hourly.append(_contains(H.user_id, text))
            users = select(H.user_id).where(*hourly).distinct().subquery()
            return int(connection.execute(select(func.count()).select_from(users)).scalar_one())
        found = int(connection.execute(overlapping).scalar_one())
        return found - int(connection.execute(gaps).scalar_one())


def all_sessions(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """The whole per-session table, most expensive first (for tests and small exports; a page
    reads session_page, an export streams csv_file)."""
    ensure_fresh(engine)
    rel = session_relation(filters)
    query = select(*[rel.c[c] for c in SESSION_FIELDS]).order_by(
        *_order(rel, "cost_usd", True, "session")
    )
    return _frame(engine, query, SESSION_FIELDS)


def all_users(*, engine: Engine, filters: Filters) -> pd.DataFrame:
    """The whole per-user table, most expensive first."""
    ensure_fresh(engine)
    rel = user_relation(filters, straddlers=_straddlers(engine, filters, None))
    query = select(*[rel.c[c] for c in USER_FIELDS]).order_by(
        *_order(rel, "cost_usd", True, "user")
    )
    return _frame(engine, query, USER_FIELDS)


def session_totals(*, engine: Engine, session_id: str) -> dict[str, Any] | None:
    """One conversation's totals over all its calls (the conversation and review headers):
    user, model, first_call, last_call, turns, calls, chat_calls, tokens, cost_usd,
    unpriced_calls, summarizations, peak_context_percent, latency_p95_ms; None without calls."""
    ensure_fresh(engine)
    query = select(
        RS.user_id,
        RS.chat_model,
        RS.first_call,
        RS.last_call,
        RS.max_turn,
        RS.calls,
        RS.chat_calls,
        RS.tokens,
        RS.cost_usd,
        RS.unpriced_calls,
        RS.summarizations,
        RS.peak_context_percent,
        RS.latency_p95_ms,
    ).where(RS.session_id == session_id, RS.model == "*")
    with engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    names = [
        "user",
        "model",
        "first_call",
        "last_call",
        "turns",
        "calls",
        "chat_calls",
        "tokens",
        "cost_usd",
        "unpriced_calls",
        "summarizations",
        "peak_context_percent",
        "latency_p95_ms",
    ]
    return dict(zip(names, tuple(row), strict=True))


def fill_partial_latency(engine: Engine, frame: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """p95 chat latency of the sessions that straddle the range, over their calls in range
    (the rollup holds each session's p95 over all its calls, which is right for the others)."""
    partial = frame.loc[frame["partial"], "session"].tolist()
    if not partial:
        return frame
    value, condition = METRICS["latency"]
    found = []
    for i in range(0, len(partial), 500):
        chunk = partial[i : i + 500]
        found.append(
            percentiles(
                engine=engine,
                value=value,
                groups=[C.session_id],
                where=and_(
                    condition,
                    filters.conditions(),
                    C.session_id.in_(chunk),
                ),
                quantiles=(0.95,),
            )
        )
    p95 = pd.concat(found).set_index("session_id")["p95"]
    out = frame.copy()
    mask = out["partial"]
    out.loc[mask, "latency_p95_ms"] = out.loc[mask, "session"].map(p95).astype(float)
    return out


def csv_file(
    *,
    engine: Engine,
    table: Literal["sessions", "users"],
    filters: Filters,
    sort: str = "cost_usd",
    descending: bool = True,
    search: str | None = None,
    chunk: int = 10_000,
) -> IO[bytes]:
    """The whole table as CSV in a temporary file, read from the database with a server-side
    cursor `chunk` rows at a time: the table is never one DataFrame, whatever its size."""
    allowed = SESSION_SORTS if table == "sessions" else USER_SORTS
    text = _clean(sort, allowed, 0, 1, search)
    ensure_fresh(engine)
    if table == "sessions":
        rel = session_relation(filters, search=text or None)
        fields = [f for f in SESSION_FIELDS if f != "partial"]
        key = "session"
    else:
        rel = user_relation(
            filters, search=text or None, straddlers=_straddlers(engine, filters, text or None)
        )
        fields, key = USER_FIELDS, "user"
    query = select(*[rel.c[c] for c in fields]).order_by(*_order(rel, sort, descending, key))
    out = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 (returned)
    text_out = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text_out)
    writer.writerow(fields)
    for rows in _stream(engine, query, chunk):
        writer.writerows(rows)
    text_out.detach()
    out.seek(0)
    return out  # type: ignore[return-value]


def _stream(engine: Engine, query: Any, chunk: int) -> Iterator[list[tuple[Any, ...]]]:
    with engine.connect() as connection:
        result = connection.execution_options(stream_results=True, yield_per=chunk).execute(query)
        for part in result.partitions():
            yield [tuple(r) for r in part]


def ranked_by_peak_context(*, engine: Engine, filters: Filters, limit: int = 1000) -> pd.DataFrame:
    """Sessions ranked by the fullest successful chat request they sent (sessions without one
    are left out): session, user, model, peak_context_percent, calls, summarizations, turns."""
    ensure_fresh(engine)
    rel = session_relation(filters, top=("peak_context_percent", True, limit), non_null=True)
    query = (
        select(
            rel.c.session,
            rel.c.user,
            rel.c.model,
            rel.c.peak_context_percent,
            rel.c.calls,
            rel.c.summarizations,
            rel.c.turns,
        )
        .where(rel.c.peak_context_percent.is_not(None))
        .order_by(*_order(rel, "peak_context_percent", True, "session"))
        .limit(limit)
    )
    return _frame(
        engine,
        query,
        ["session", "user", "model", "peak_context_percent", "calls", "summarizations", "turns"],
    )
