"""The SQL behind the per-session and per-user tables: the relations over the session rollups
(or the raw rows where a rollup cannot answer), searches, and which users straddle a page's
edge, so that a page sums only the users that can reach it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Engine,
    Float,
    and_,
    cast,
    false,
    func,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from data.analytics.filters import Filters
from data.store.orm import ModelCall
from data.store.orm_rollups import RollupSessionHourly, RollupSessions, RollupUsers


def _i(column: Any) -> ColumnElement[Any]:
    return cast(column, BigInteger)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _contains(column: Any, text: str) -> ColumnElement[bool]:
    """`text` anywhere in `column`, whatever the case: lower(column) LIKE lower('%text%'), the
    form the trigram indexes on lower(id) serve (migration 0013; a trigram index on the bare
    column would also be chosen for equality lookups, and planned badly for them). On SQLite
    the bare LIKE, which ignores ASCII case as its lower() does (it folds nothing else): the
    same rows, and its scan at 1M calls takes 38 ms instead of 50."""
    return _Folded(column).like(_Folded(literal(_like(text))), escape="\\")


class _Wrapped(ColumnElement[Any]):
    """An expression compiled one way on SQLite and another elsewhere (subclasses register
    both). Its cache key holds the wrapped expression: two of them on different columns are
    different SQL."""

    inherit_cache = True
    _traverse_internals = [("value", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, value: Any) -> None:
        self.value = value
        self.type = value.type


class _Folded(_Wrapped):
    """lower(x); the bare x on SQLite, whose LIKE ignores ASCII case by itself."""

    inherit_cache = True


@compiles(_Folded)
def _folded_default(element: _Folded, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(func.lower(element.value), **kw))


@compiles(_Folded, "sqlite")
def _folded_sqlite(element: _Folded, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.value, **kw))


class _Unindexed(_Wrapped):
    """A column that SQLite's planner may not use an index for (a unary +); the bare column
    elsewhere."""

    inherit_cache = True


@compiles(_Unindexed)
def _unindexed_default(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.value, **kw))


@compiles(_Unindexed, "sqlite")
def _unindexed_sqlite(element: _Unindexed, compiler: Any, **kw: Any) -> str:
    return "+" + str(compiler.process(element.value, **kw))


def _unindexed(column: Any) -> ColumnElement[Any]:
    return _Unindexed(column)


def _model_key(filters: Filters) -> tuple[ColumnElement[bool], bool]:
    """(condition on a rollup's model column, whether several models must be summed)."""
    if not filters.models:
        return RS.model == "*", False
    if len(filters.models) == 1:
        return RS.model == filters.models[0], False
    return RS.model.in_(filters.models), True


def _session_conditions(filters: Filters, search: str | None) -> list[ColumnElement[bool]]:
    parts: list[ColumnElement[bool]] = []
    if filters.user:
        parts.append(RS.user_id == filters.user)
    if filters.session:
        parts.append(RS.session_id == filters.session)
    if search:
        parts.append(or_(_contains(RS.session_id, search), _contains(RS.user_id, search)))
    return parts


def session_relation(
    filters: Filters,
    *,
    search: str | None = None,
    only_users: Any = None,
    top: tuple[str, bool, int] | None = None,
    first_from: Any = None,
    non_null: bool = False,
) -> Any:
    """Every session with a call in the range (and model, user, session filters, and `search`
    in its id or user id) with SESSION_FIELDS, as a subquery. `only_users` (a select of user
    ids) restricts it to those users' sessions. `top` = (column, descending, n) keeps only the
    first n whole sessions in that order (enough for any page up to n): the planner reads them
    off the column's index instead of sorting every session of the range, which it would do
    for an ORDER BY over the whole union. `first_from` keeps only the whole sessions whose
    first call is at or after it (the review queue's newest first, data.workflows.review).
    `non_null` leaves out the sessions without a value in the `top` column: the first n are then
    read off its index in either direction (NULLS LAST on a descending order matches no b-tree
    direction, so the planner sorted every session of the range instead)."""
    whole, part = _session_parts(filters, search, only_users)
    if first_from is not None:
        whole = whole.where(RS.first_call >= first_from)
    if top is not None:
        whole = _top(whole, *top, "session", non_null=non_null)
    return whole.union_all(part).subquery("sessions")


def _session_parts(filters: Filters, search: str | None, only_users: Any) -> tuple[Any, Any]:
    """(the sessions wholly inside the range, one rollup row each; the straddling ones, summed
    from their hours in the range)."""
    model_is, several = _model_key(filters)
    where = _session_conditions(filters, search)
    if only_users is not None:
        where.append(RS.user_id.in_(only_users))
    first: ColumnElement[Any] = RS.first_call
    last: ColumnElement[Any] = RS.last_call
    if filters.user:
        # One user's sessions are read off their user index. SQLite otherwise reads the range
        # off a span index, every session of a 90-day range, and keeps the user's (1M calls,
        # a user with 901 sessions: 51 -> 9 ms a page); Postgres's planner chooses well.
        first, last = _unindexed(first), _unindexed(last)
    inside = and_(first >= filters.start, last < filters.end)
    if several:
        whole = (
            select(
                RS.session_id.label("session"),
                func.min(RS.user_id).label("user"),
                func.min(RS.model).label("model"),
                func.min(RS.first_call).label("first_call"),
                func.max(RS.last_call).label("last_call"),
                func.max(RS.max_turn).label("turns"),
                _i(func.sum(RS.calls)).label("calls"),
                _i(func.sum(RS.chat_calls)).label("chat_calls"),
                _i(func.sum(RS.tokens)).label("tokens"),
                func.sum(RS.cost_usd).label("cost_usd"),
                _i(func.sum(RS.unpriced_calls)).label("unpriced_calls"),
                _i(func.sum(RS.summarizations)).label("summarizations"),
                func.max(RS.peak_context_percent).label("peak_context_percent"),
                cast(null(), Float).label("latency_p95_ms"),
                false().label("partial"),
            )
            .where(model_is, *where)
            .group_by(RS.session_id)
            .having(
                and_(func.min(RS.first_call) >= filters.start, func.max(RS.last_call) < filters.end)
            )
        )
        straddling: Any = (
            select(RS.session_id)
            .where(model_is, *where)
            .group_by(RS.session_id)
            .having(
                and_(
                    func.min(RS.first_call) < filters.end,
                    func.max(RS.last_call) >= filters.start,
                    or_(
                        func.min(RS.first_call) < filters.start,
                        func.max(RS.last_call) >= filters.end,
                    ),
                )
            )
        )
    else:
        whole = select(
            RS.session_id.label("session"),
            RS.user_id.label("user"),
            (RS.chat_model if not filters.models else RS.model).label("model"),
            RS.first_call,
            RS.last_call,
            RS.max_turn.label("turns"),
            RS.calls,
            RS.chat_calls,
            RS.tokens,
            RS.cost_usd,
            RS.unpriced_calls,
            RS.summarizations,
            RS.peak_context_percent,
            RS.latency_p95_ms,
            false().label("partial"),
        ).where(model_is, inside, *where)
        # Two index ranges, not one OR: sessions across the start, and across the end.
        straddling = union_all(
            select(RS.session_id).where(
                model_is, last >= filters.start, first < filters.start, *where
            ),
            select(RS.session_id).where(
                model_is,
                last >= filters.end,
                first < filters.end,
                first >= filters.start,
                *where,
            ),
        )
    hourly_model = H.model.in_(filters.models) if filters.models else true()
    model: Any
    if not filters.models:
        # The chat model of the calls in range: most chat calls, then the name.
        h2 = RollupSessionHourly.__table__.alias("h2")
        model = (
            select(h2.c.model)
            .where(
                h2.c.session_id == H.session_id,
                h2.c.hour >= filters.start,
                h2.c.hour < filters.end,
            )
            .group_by(h2.c.model)
            .order_by(func.sum(h2.c.chat_calls).desc(), h2.c.model)
            .limit(1)
            .scalar_subquery()
        )
    else:
        model = func.min(H.model)
    part = (
        select(
            H.session_id.label("session"),
            func.min(H.user_id).label("user"),
            model.label("model"),
            func.min(H.first_call).label("first_call"),
            func.max(H.last_call).label("last_call"),
            func.max(H.max_turn).label("turns"),
            _i(func.sum(H.calls)).label("calls"),
            _i(func.sum(H.chat_calls)).label("chat_calls"),
            _i(func.sum(H.tokens)).label("tokens"),
            func.sum(H.cost_usd).label("cost_usd"),
            _i(func.sum(H.unpriced_calls)).label("unpriced_calls"),
            _i(func.sum(H.summarizations)).label("summarizations"),
            func.max(H.peak_context_percent).label("peak_context_percent"),
            cast(null(), Float).label("latency_p95_ms"),
            true().label("partial"),
        )
        .where(
            H.hour >= filters.start,
            H.hour < filters.end,
            hourly_model,
            H.session_id.in_(straddling),
        )
        .group_by(H.session_id)
    )
    return whole, part


def user_relation(
    filters: Filters,
    *,
    search: str | None = None,
    straddlers: list[str] | None = None,
    top: tuple[str, bool, int] | None = None,
) -> Any:
    """Every user with a call in the range (and filters, and `search` in the user id) with
    USER_FIELDS, as a subquery. `straddlers`: the straddling users to sum (None: every user is
    summed from the range's sessions); `top` = (column, descending, n) keeps only the first n
    whole users in that order (see _page_straddlers: together they serve a page without
    summing every straddling user)."""
    arms = _user_parts(filters, search, straddlers)
    if top is not None and len(arms) == 2:
        arms[0] = _top(arms[0], *top, "user")
    return (arms[0] if len(arms) == 1 else arms[0].union_all(arms[1])).subquery("users")


def _user_where(filters: Filters, search: str | None) -> list[ColumnElement[bool]]:
    """The per-user rollup rows of a view: its model's rows ("*" for all models), the user
    filter and the search in the user id."""
    parts: list[ColumnElement[bool]] = [RU.model == (filters.models[0] if filters.models else "*")]
    if filters.user:
        parts.append(RU.user_id == filters.user)
    if search:
        parts.append(_contains(RU.user_id, search))
    return parts


def _whole_users(filters: Filters, search: str | None) -> Any:
    """The users wholly inside the range: one rollup row each."""
    return select(
        RU.user_id.label("user"),
        RU.sessions,
        RU.calls,
        RU.tokens,
        RU.cost_usd,
        RU.unpriced_calls,
    ).where(
        *_user_where(filters, search), RU.first_call >= filters.start, RU.last_call < filters.end
    )


def _user_parts(filters: Filters, search: str | None, straddlers: list[str] | None) -> list[Any]:
    """The users wholly inside the range (one rollup row each) and the straddling ones in
    `straddlers` (summed from their sessions in the range); or, for a session, several models
    or too many straddling users to list (None), one arm summing the range's sessions by user
    (measured at 10M calls, 7 days, 14,000 straddling users: 31 ms, where the two arms with
    the straddlers hash-joined to the range's sessions took 85 ms)."""
    if filters.session or len(filters.models) > 1 or straddlers is None:
        users = select(RU.user_id).where(*_user_where(filters, search)) if search else None
        return [_by_user(session_relation(filters, only_users=users))]
    # A known, short list: the planner looks each user's sessions up by index.
    part = _by_user(session_relation(filters, only_users=straddlers or [""]))
    return [_whole_users(filters, search), part]


def _by_user(s: Any) -> Any:
    """Sessions (a session_relation) summed into USER_FIELDS, one row per user."""
    return select(
        s.c.user.label("user"),
        _i(func.count()).label("sessions"),
        _i(func.sum(s.c.calls)).label("calls"),
        _i(func.sum(s.c.tokens)).label("tokens"),
        func.sum(s.c.cost_usd).label("cost_usd"),
        _i(func.sum(s.c.unpriced_calls)).label("unpriced_calls"),
    ).group_by(s.c.user)


MANY_STRADDLING = 2000


def _straddling_query(
    filters: Filters, search: str | None, bound: ColumnElement[bool] | None = None
) -> Any:
    """The users with calls both inside and outside the range (two index ranges), and
    `bound` on their rollup row."""
    parts = _user_where(filters, search)
    if bound is not None:
        parts.append(bound)
    return union_all(
        select(RU.user_id).where(
            *parts, RU.last_call >= filters.start, RU.first_call < filters.start
        ),
        select(RU.user_id).where(
            *parts,
            RU.last_call >= filters.end,
            RU.first_call < filters.end,
            RU.first_call >= filters.start,
        ),
    )


def _straddlers(
    engine: Engine,
    filters: Filters,
    search: str | None,
    most: int = MANY_STRADDLING,
    bound: ColumnElement[bool] | None = None,
) -> list[str] | None:
    """The straddling users' ids (with `bound`), or None when there are more than `most` (then
    user_relation sums the range's sessions by user instead of looking users up one by one)."""
    if filters.session or len(filters.models) > 1:
        return None  # user_relation sums the sessions then
    query = _straddling_query(filters, search, bound).limit(most + 1)
    with engine.connect() as connection:
        ids = list(dict.fromkeys(connection.execute(query).scalars()))
    return None if len(ids) > most else ids


def _first_straddlers(
    engine: Engine,
    filters: Filters,
    search: str | None,
    bound: ColumnElement[bool],
    n: int,
    descending: bool,
) -> list[str]:
    """The first n + 1 straddling users (with `bound`) in the order of their ids."""
    union = _straddling_query(filters, search, bound).subquery("straddling")
    column = union.c.user_id
    query = select(column).order_by(column.desc() if descending else column).limit(n + 1)
    with engine.connect() as connection:
        return list(dict.fromkeys(connection.execute(query).scalars()))


# Per-user columns that only grow as calls are added: a user's total over any range is at
# most their all-time total (counts, and costs, which are never negative).
MONOTONE = ("sessions", "calls", "tokens", "cost_usd", "unpriced_calls")


def _page_straddlers(
    engine: Engine, filters: Filters, search: str | None, sort: str, descending: bool, n: int
) -> tuple[list[str] | None, bool, _Check | None]:
    """(straddlers, top, check) for user_relation when only the first n rows in this order
    are wanted: the straddling users that could be among them, without summing the others.

    Take the n-th whole user in the order. A straddling user whose all-time value (its rollup
    row) is below that user's value cannot rank above it, since its value in the range is at
    most its all-time value; sorted by id, its id alone places it. So only the straddling users
    at or above the n-th whole user are summed (measured at 10M calls, 90 days, by cost: 270
    of the 3,160 straddling users are summed; the first page with its count took 288 ms,
    now 104 ms).
    Sorted by id, only the first n of those are summed (`check` holds the n-th one's id). The
    page is exact when its n-th row comes no later than that id (every straddler after it
    ranks after the page); when it does not (some of those n had no call in the range),
    user_page sums them all. Measured at 10M calls, 90 days, the fourth page by id: 590 straddlers
    (98,000 sessions) summed before, 150 now.
    An ascending sort by a total has no such bound: every straddler is summed then."""
    if filters.session or len(filters.models) > 1:
        return None, False, None
    if sort == "user":
        column = RU.user_id
    elif sort in MONOTONE and descending:
        column = RU[sort]
    else:
        return _straddlers(engine, filters, search), False, None
    whole = _whole_users(filters, search).subquery("whole")
    nth = (
        select(whole.c[sort])
        .order_by(*_order(whole, sort, descending, "user"))
        .offset(n - 1)
        .limit(1)
    )
    with engine.connect() as connection:
        row = connection.execute(nth).first()
    if row is None:  # fewer than n whole users: every straddler may be on the page
        return _straddlers(engine, filters, search), False, None
    bound = column >= row[0] if descending else column <= row[0]
    if sort == "user" and n <= MANY_STRADDLING:  # a page deep down: summed in one pass
        first = _first_straddlers(engine, filters, search, bound, n, descending)
        if len(first) > n:
            return first[:n], True, _Check(first[n - 1], bound)
        return first, True, None
    straddlers = _straddlers(engine, filters, search, bound=bound)
    return straddlers, straddlers is not None, None


RS = RollupSessions.__table__.c


RU = RollupUsers.__table__.c


H = RollupSessionHourly.__table__.c


C = ModelCall.__table__.c


@dataclass(frozen=True, slots=True)
class _Check:
    """A page by id summed only the first straddlers: `last` is the last of them, `bound` the
    condition on every straddler that could reach the page."""

    last: str
    bound: ColumnElement[bool]


NULLABLE = {"peak_context_percent", "latency_p95_ms"}


def _order(
    relation: Any, sort: str, descending: bool, key: str, *, nulls_last: bool = True
) -> list[Any]:
    """ORDER BY the column, then the id, both in the same direction: exactly the order of the
    rollup's (model, column, session_id) index, so the top page is read off the index. A
    nullable column puts its NULLs last (a session without a successful chat call has no peak
    context), unless `nulls_last` is False (for rows that have no NULLs in it)."""
    column, tie = relation.c[sort], relation.c[key]
    first, second = (column.desc(), tie.desc()) if descending else (column.asc(), tie.asc())
    if sort in NULLABLE and nulls_last:
        first = first.nulls_last()
    return [first, second]


def _top(arm: Any, sort: str, descending: bool, n: int, key: str, *, non_null: bool = False) -> Any:
    """The first n rows of `arm` in this order (with a value in `sort`, when `non_null`), as a
    select the union can take: the planner reads them off the column's index."""
    inner = arm.subquery("whole")
    limited = select(*inner.c)
    if non_null:
        limited = limited.where(inner.c[sort].is_not(None))
    order = _order(inner, sort, descending, key, nulls_last=not non_null)
    return select(*limited.order_by(*order).limit(n).subquery("top").c)
