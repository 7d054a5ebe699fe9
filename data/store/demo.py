"""Demo history: about 30 days of realistic synthetic support traffic.

`python -m data.store.demo` loads it into the configured database: sessions, messages and model
calls, plus the customers' orders and the agent's tool calls and memory recalls. Demo calls,
sessions and orders are flagged `demo = true` (an agent event is a demo row through its demo
session), and so are the planted conversation outcomes (data/store/demo_outcomes.py); the loader
refuses to mix with existing rows unless told how."""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select

from data.analytics.rollups import refresh
from data.integrations.orders import recent_orders
from data.integrations.prices import linear_rate, price_call
from data.store import demo_outcomes, partitions
from data.store.db import describe, make_engine
from data.store.demo_support import _lognormal, _order, _order_number, _settle, _turn_events
from data.store.migrate import upgrade_for_command
from data.store.orm import AgentEvent, ChatSession, Message, ModelCall
from data.store.orm_support import Order


@dataclass(frozen=True)
class DemoModel:
    name: str
    share: float
    window: int
    base_latency_s: float
    s_per_output_token: float


MODELS = (
    DemoModel("gpt-4o-mini", 0.60, 128_000, 0.30, 0.011),
    DemoModel("gpt-4.1-mini", 0.28, 1_047_576, 0.35, 0.013),
    DemoModel("gpt-4o", 0.12, 128_000, 0.45, 0.020),
)
SUMMARY_MODEL = MODELS[0]
SYSTEM_TOKENS = 420
ERROR_RATE = 0.015
ERRORS = (
    "RateLimitError: Error code: 429 - rate limit reached for requests",
    "APITimeoutError: Request timed out.",
    "InternalServerError: Error code: 500 - The server had an error",
)

# Each question with the support tools the agent calls to answer it (agent/tools.py).
ASKS = (
    ("Where is my order {order}? It was supposed to arrive on Monday.", ("lookup_order",)),
    (
        "I want to return the shoes from order {order}, they are too small.",
        ("lookup_order", "search_help_center"),
    ),
    ("My card was charged twice for order {order}.", ("lookup_order", "open_ticket")),
    ("Can I change the delivery address for {order}?", ("lookup_order",)),
    (
        "The package for {order} arrived damaged. What can I do?",
        ("search_help_center", "open_ticket"),
    ),
    ("How long does a refund take after you receive a return?", ("search_help_center",)),
    ("Do you ship to Canada, and how much does it cost?", ("search_help_center",)),
    ("I never received the confirmation e-mail for {order}.", ("list_recent_orders",)),
    ("Can I cancel order {order}? I ordered the wrong size.", ("lookup_order",)),
    ("Is there a warranty on the headphones I bought ({order})?", ("search_help_center",)),
)
ANSWERS = (
    "I checked order {order}: it left our warehouse yesterday and should arrive within two "
    "working days. Here is the tracking link in your account under Orders.",
    "You can return it within 30 days. I have opened a return for {order}; you will get a "
    "prepaid label by e-mail within the hour.",
    "I am sorry about that. I see two authorisations for {order}; the second one is released "
    "automatically within 3 to 5 working days.",
    "The address can still be changed because {order} has not shipped yet. Please send me the "
    "new address and I will update it.",
    "I am sorry the package was damaged. Please send a photo of it; I will then send a "
    "replacement for {order} at no cost.",
    "Refunds reach your account 5 to 10 working days after the return arrives at our warehouse.",
    "Yes, we ship to Canada. Standard delivery takes 7 to 10 days and costs $14.90.",
    "I have re-sent the confirmation for {order}. Please also check your spam folder.",
    "Order {order} was cancelled and the full amount will be refunded to your card.",
    "The headphones carry a two-year warranty. I can start a warranty claim for {order} now.",
)


# The chat page's default user (pages/chat.py). The demo gives them a few orders, so that right
# after `make demo` one can ask the agent "where is my order A-…?".
CHAT_PAGE_USER = "guest"


def _diurnal_time(rng: random.Random, start: datetime, days: int) -> datetime:
    """Support traffic peaks in the afternoon (UTC) and dips at night."""
    day = rng.randrange(days)
    hour = min(max(rng.gauss(14, 4.5), 0), 23.99)
    return start + timedelta(days=day, hours=hour)


@dataclass
class DemoSession:
    """One generated conversation: its chat_sessions row and the rows that belong to it."""

    session: dict[str, Any]
    messages: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    events: list[dict[str, Any]]
    orders: list[dict[str, Any]]


def history(
    *,
    days: int = 30,
    users: int = 200,
    sessions: int = 2000,
    calls: int = 50_000,
    seed: int = 7,
    end: datetime | None = None,
    support: bool = False,
) -> Iterator[DemoSession]:
    """The demo conversations one at a time, so that a large history can be written in chunks
    without holding it in memory (bench/pages.py writes ten million calls this way). The same
    arguments give the same sessions and calls as generate()."""
    rng = random.Random(seed)
    side = random.Random(f"{seed}-support")
    end = end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    yield from _sessions(rng, side, days, users, sessions, calls, seed, end, support)


def _sessions(
    rng: random.Random,
    side: random.Random,
    days: int,
    users: int,
    sessions: int,
    calls: int,
    seed: int,
    end: datetime,
    support: bool,
) -> Iterator[DemoSession]:
    start = end - timedelta(days=days)
    user_ids = [f"demo-user-{i:03d}" for i in range(1, users + 1)]
    user_weights = [1 / (rank**0.8) for rank in range(1, users + 1)]  # a few heavy users
    # Session lengths (in calls) from a lognormal, scaled so the total is exactly `calls`.
    raw = [_lognormal(rng, 1.0, 0.9) for _ in range(sessions)]
    scale = calls / sum(raw)
    lengths = [max(1, round(r * scale)) for r in raw]
    lengths[-1] += calls - sum(lengths)
    while lengths[-1] < 1:  # rounding drift: take it from the longest sessions
        longest = max(range(sessions - 1), key=lengths.__getitem__)
        lengths[longest] -= 1
        lengths[-1] += 1

    for index, length in enumerate(lengths):
        model = rng.choices(MODELS, weights=[m.share for m in MODELS])[0]
        # Every user has at least one session; the rest follow a heavy-tailed weighting.
        user = user_ids[index] if index < users else rng.choices(user_ids, weights=user_weights)[0]
        session_id = f"demo-{seed}-{index:05d}"
        t = _diurnal_time(rng, start, days)
        order = _order_number(index, seed)
        context = SYSTEM_TOKENS
        turn, made, title = 0, 0, ""
        message_rows: list[dict[str, Any]] = []
        call_rows: list[dict[str, Any]] = []
        event_rows: list[dict[str, Any]] = []
        order_rows: list[dict[str, Any]] = []
        if support:  # the customer placed the order a few days before asking about it
            placed = t - timedelta(days=side.uniform(0.2, 12))
            order_rows.append(_order(side, number=order, user=user, placed_at=placed))
        # Context grows with each turn (retrieved policies, order details, the answer).
        growth = _lognormal(rng, 2600, 0.6)
        while made < length:
            turn += 1
            ask, tools = rng.choice(ASKS)
            ask = ask.format(order=order)
            title = title or ask[:60]
            if context > 0.75 * model.window and made + 2 <= length:
                folded = context - SYSTEM_TOKENS
                out = int(_lognormal(rng, 450, 0.3))
                latency = SUMMARY_MODEL.base_latency_s + out * SUMMARY_MODEL.s_per_output_token
                call_rows.append(
                    _call(
                        t,
                        user,
                        session_id,
                        turn,
                        "summarize",
                        SUMMARY_MODEL,
                        tokens=(folded, 0, out),
                        latency_s=latency * _lognormal(rng, 1.0, 0.25),
                        ttft_s=None,
                    )
                )
                made += 1
                context = SYSTEM_TOKENS + out + int(0.12 * model.window)
                t += timedelta(seconds=latency)
            context += int(_lognormal(rng, growth, 0.5))
            out = max(8, int(_lognormal(rng, 170, 0.55)))
            cached = (
                int(context * rng.uniform(0.5, 0.9)) if context > 1024 and rng.random() < 0.7 else 0
            )
            latency = (
                model.base_latency_s + context / 40_000 + out * model.s_per_output_token
            ) * _lognormal(rng, 1.0, 0.35)
            ttft = (0.18 + context / 60_000) * _lognormal(rng, 1.0, 0.4)
            failed = rng.random() < ERROR_RATE
            call_rows.append(
                _call(
                    t,
                    user,
                    session_id,
                    turn,
                    "chat",
                    model,
                    tokens=(context, cached, out),
                    latency_s=latency,
                    ttft_s=ttft,
                    error=rng.choice(ERRORS) if failed else None,
                )
            )
            made += 1
            if support:
                event_rows.extend(
                    _turn_events(
                        side,
                        at=t,
                        user=user,
                        session_id=session_id,
                        turn=turn,
                        ask=ask,
                        tools=() if failed else tools,
                        order=order_rows[-1],
                    )
                )
            message_rows.append(
                dict(
                    session_id=session_id,
                    turn=turn,
                    role="user",
                    content=ask,
                    created_at=t,
                    run_id=None,
                )
            )
            if not failed:
                answer = rng.choice(ANSWERS).format(order=order)
                message_rows.append(
                    dict(
                        session_id=session_id,
                        turn=turn,
                        role="assistant",
                        content=answer,
                        created_at=t + timedelta(seconds=latency),
                        run_id=None,
                    )
                )
            context += out
            t += timedelta(seconds=latency + _lognormal(rng, 45, 0.8))
        if t > end:  # a session that would run past `end` starts earlier instead
            shift = t - end + timedelta(minutes=1)
            for row in call_rows:
                row["ts"] -= shift
            for row in message_rows:
                row["created_at"] -= shift
            for row in event_rows:
                row["ts"] -= shift
            for row in order_rows:
                for key in ("placed_at", "shipped_at", "delivered_at", "returned_at"):
                    row[key] -= shift
            t -= shift
        yield DemoSession(
            session=dict(
                id=session_id,
                user_id=user,
                title=title,
                created_at=call_rows[0]["ts"],
                updated_at=t,
                demo=True,
            ),
            messages=message_rows,
            calls=call_rows,
            events=event_rows,
            orders=order_rows,
        )


def generate(
    *,
    engine: Engine,
    days: int = 30,
    users: int = 200,
    sessions: int = 2000,
    calls: int = 50_000,
    seed: int = 7,
    end: datetime | None = None,
    messages: bool = True,
    support: bool = False,
    outcomes: bool = False,
) -> dict[str, int]:
    """Insert demo sessions, messages and model calls; returns the counts written.

    With `support`, also the orders the conversations are about (plus a few for the chat
    page's user) and the agent's memory recalls and tool calls for every turn; with
    `outcomes`, a verdict for every ended conversation and reviewer labels on about a tenth
    (they quote the messages, so they need them). Both come from random streams of their own,
    so the calls are the same with and without them."""
    if outcomes and not messages:
        raise ValueError("demo outcomes quote the messages: outcomes=True needs messages=True")
    rng = random.Random(seed)
    side = random.Random(f"{seed}-support")
    end = end or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    partitions.ensure(engine, since=end - timedelta(days=days))  # the history's months (Postgres)
    session_rows: list[dict[str, Any]] = []
    message_rows: list[dict[str, Any]] = []
    call_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    order_rows: list[dict[str, Any]] = []
    made_rows: list[DemoSession] = []
    for made in _sessions(rng, side, days, users, sessions, calls, seed, end, support):
        made_rows.append(made)
        session_rows.append(made.session)
        message_rows += made.messages
        call_rows += made.calls
        event_rows += made.events
        order_rows += made.orders
    if not messages:  # benchmarks need only the calls
        message_rows = []
    if support:
        # The chat page's user: one order of each kind a customer asks about.
        for i, (age, fate) in enumerate(
            (
                (timedelta(hours=3), "delivered"),  # paid, not shipped yet
                (timedelta(hours=50), "delivered"),  # shipped, on its way
                (timedelta(days=12), "delivered"),
                (timedelta(days=25), "returned"),
            )
        ):
            number = _order_number(sessions + i, seed)
            order_rows.append(
                _order(side, number=number, user=CHAT_PAGE_USER, placed_at=end - age, fate=fate)
            )
        order_rows = [_settle(row, end) for row in order_rows]
    planted = demo_outcomes.Planted()
    if outcomes:  # the judge defaults to the summarization model
        planted = demo_outcomes.plant(
            sessions=made_rows, end=end, seed=seed, judge_model=SUMMARY_MODEL.name
        )
        for row in session_rows:
            row["closed_at"] = planted.closed.get(row["id"])
    with engine.begin() as connection:
        for table, rows in (
            (ChatSession, session_rows),
            (Message, message_rows),
            (ModelCall, call_rows),
            (AgentEvent, event_rows),
            (Order, order_rows),
        ):
            for i in range(0, len(rows), 5000):
                connection.execute(insert(table), rows[i : i + 5000])
        planted_counts = demo_outcomes.write(connection, planted) if outcomes else {}
    written = {
        "sessions": len(session_rows),
        "messages": len(message_rows),
        "calls": len(call_rows),
        "users": len({r["user_id"] for r in session_rows}),
    }
    if support:
        written |= {"orders": len(order_rows), "agent events": len(event_rows)}
    return written | planted_counts


def _call(
    ts: datetime,
    user: str,
    session_id: str,
    turn: int,
    purpose: str,
    model: DemoModel,
    *,
    tokens: tuple[int, int, int],
    latency_s: float,
    ttft_s: float | None,
    error: str | None = None,
) -> dict[str, Any]:
    """One model_calls row; `tokens` is (input, cached input, output), all 0 for a failure."""
    input_tokens, cached, output = (0, 0, 0) if error else tokens
    # The demo models have flat prices, so their per-token rates price a million rows quickly;
    # a test checks this against price_call.
    price = price_call(
        provider="openai",
        model=model.name,
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        output_tokens=output,
        overrides={model.name: linear_rate("openai", model.name)},  # type: ignore[dict-item]
    )
    return dict(
        ts=ts,
        user_id=user,
        session_id=session_id,
        turn=turn,
        purpose=purpose,
        provider="openai",
        model=model.name,
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        output_tokens=output,
        usage_source="provider",
        cost_usd=price.cost_usd,
        cost_status=price.status,
        latency_ms=round(latency_s * 1000, 2),
        ttft_ms=None if ttft_s is None or error else round(min(ttft_s, latency_s) * 1000, 2),
        context_tokens=input_tokens,
        context_window=model.window,
        status="error" if error else "ok",
        error=error,
        run_id=None,
        demo=True,
    )


def counts(*, engine: Engine) -> tuple[int, int]:
    """(demo calls, live calls) in the database."""
    with engine.connect() as connection:
        rows = dict(
            connection.execute(select(ModelCall.demo, func.count()).group_by(ModelCall.demo)).all()
        )
    return int(rows.get(True, 0)), int(rows.get(False, 0))


def remove(*, engine: Engine) -> None:
    """Delete every demo row (live rows are untouched)."""
    with engine.begin() as connection:
        connection.execute(delete(ModelCall).where(ModelCall.demo.is_(True)))
        demo_sessions = select(ChatSession.id).where(ChatSession.demo.is_(True))
        connection.execute(delete(Message).where(Message.session_id.in_(demo_sessions)))
        connection.execute(delete(AgentEvent).where(AgentEvent.session_id.in_(demo_sessions)))
        demo_outcomes.remove(connection)
        connection.execute(delete(ChatSession).where(ChatSession.demo.is_(True)))
        connection.execute(delete(Order).where(Order.demo.is_(True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: the configured one)")
    parser.add_argument("--replace", action="store_true", help="replace earlier demo rows")
    parser.add_argument(
        "--with-live", action="store_true", help="allow demo rows in a database that has live calls"
    )
    parser.add_argument("--remove", action="store_true", help="only delete the demo rows")
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if min(args.calls, args.sessions, args.users, args.days) < 1 or args.calls < args.sessions:
        parser.error(
            "--calls, --sessions, --users and --days must be positive, "
            "and --calls at least --sessions"
        )
    url = upgrade_for_command(args.db)
    if url is None:
        return 2
    engine = make_engine(url)
    demo, live = counts(engine=engine)
    where = describe(url)
    if args.remove:
        remove(engine=engine)
        print(f"removed {demo:,} demo calls from {where}")
        return 0
    if demo and not args.replace:
        print(
            f"error: {where} already has {demo:,} demo calls; use --replace to load them "
            "again or --remove to delete them",
            file=sys.stderr,
        )
        return 1
    if live and not args.with_live:
        print(
            f"error: {where} has {live:,} live calls; demo rows would mix with them. Use a "
            "separate database (--db), or --with-live to mix on purpose (demo rows stay "
            "flagged and `--remove` deletes them)",
            file=sys.stderr,
        )
        return 1
    # Also when no demo calls are left: a stray demo order would collide with the new ones.
    remove(engine=engine)
    written = generate(
        engine=engine,
        days=args.days,
        users=args.users,
        sessions=args.sessions,
        calls=args.calls,
        seed=args.seed,
        support=True,
        outcomes=True,
    )
    print(
        f"loaded demo history into {where}: " + ", ".join(f"{v:,} {k}" for k, v in written.items())
    )
    tries = recent_orders(engine=engine, user_id=CHAT_PAGE_USER)
    print(
        f"try the chat page as {CHAT_PAGE_USER!r}: ask about "
        + ", ".join(f"{o.order_number} ({o.status})" for o in tries)
    )
    started = time.perf_counter()
    hours = refresh(engine)  # so the first page view does not pay for it
    print(
        f"rolled up {hours:,} hours for the analyst pages in {time.perf_counter() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
