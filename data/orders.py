"""Orders and support tickets: the queries behind the agent's support tools.

Every order query takes the user id and filters on it, so a caller cannot read another
user's order by guessing its number."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, insert, select

from data.models import TICKET_KINDS, TICKET_PRIORITIES, Order, SupportTicket, utcnow

# "A-10234": one letter, a hyphen, five digits. Customers also type "a10234" or "#A-10234".
ORDER_NUMBER = re.compile(r"^#?\s*([A-Z])-?(\d{5})$", re.IGNORECASE)
# The same shape inside free text, for finding order numbers in a chat message.
ORDER_NUMBER_IN_TEXT = re.compile(r"(?<![\w-])#?([A-Z])-?(\d{5})(?![\w-])", re.IGNORECASE)
MAX_SUBJECT_CHARS = 200
MAX_BODY_CHARS = 4000


@dataclass(frozen=True, slots=True)
class OrderItem:
    name: str
    qty: int
    unit_usd: float


@dataclass(frozen=True, slots=True)
class OrderView:
    """One order as support sees it."""

    order_number: str
    user_id: str
    status: str
    items: tuple[OrderItem, ...]
    total_usd: float
    placed_at: datetime
    shipped_at: datetime | None
    delivered_at: datetime | None
    carrier: str | None
    tracking_number: str | None


@dataclass(frozen=True, slots=True)
class Ticket:
    id: int
    user_id: str
    session_id: str
    turn: int
    kind: str
    subject: str
    body: str
    priority: str
    status: str
    created_at: datetime


def normalize_order_number(text: str) -> str | None:
    """The canonical form ("A-10234") of an order number as a customer may type it, or None
    when `text` is not an order number."""
    match = ORDER_NUMBER.match(text.strip())
    return f"{match[1].upper()}-{match[2]}" if match else None


def order_numbers_in(text: str) -> list[str]:
    """The order numbers mentioned in free text, canonical and in order of first mention."""
    found = (f"{m[1].upper()}-{m[2]}" for m in ORDER_NUMBER_IN_TEXT.finditer(text))
    return list(dict.fromkeys(found))


def _view(row: Row[Any]) -> OrderView:
    return OrderView(
        order_number=row.order_number,
        user_id=row.user_id,
        status=row.status,
        items=tuple(OrderItem(**item) for item in json.loads(row.items)),
        total_usd=row.total_usd,
        placed_at=row.placed_at,
        shipped_at=row.shipped_at,
        delivered_at=row.delivered_at,
        carrier=row.carrier,
        tracking_number=row.tracking_number,
    )


def get_order(*, engine: Engine, user_id: str, order_number: str) -> OrderView | None:
    """The user's order with this number; None when it does not exist *or* belongs to
    someone else (the two cases look the same, so numbers cannot be probed)."""
    number = normalize_order_number(order_number)
    if number is None:
        return None
    query = select(Order).where(Order.order_number == number, Order.user_id == user_id)
    with engine.connect() as connection:
        row = connection.execute(query).first()
    return _view(row) if row else None


def recent_orders(*, engine: Engine, user_id: str, limit: int = 5) -> list[OrderView]:
    """The user's newest orders, newest first."""
    query = (
        select(Order)
        .where(Order.user_id == user_id)
        .order_by(Order.placed_at.desc(), Order.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [_view(row) for row in rows]


def create_ticket(
    *,
    engine: Engine,
    user_id: str,
    session_id: str,
    turn: int,
    kind: str,
    subject: str,
    body: str,
    priority: str = "normal",
) -> Ticket:
    """Open a ticket (or an escalation to a human) and return it with its id."""
    if kind not in TICKET_KINDS:
        raise ValueError(f"unknown ticket kind {kind!r}")
    if priority not in TICKET_PRIORITIES:
        raise ValueError(f"unknown priority {priority!r}")
    row: dict[str, Any] = dict(
        user_id=user_id,
        session_id=session_id,
        turn=turn,
        kind=kind,
        subject=subject.strip()[:MAX_SUBJECT_CHARS],
        body=body.strip()[:MAX_BODY_CHARS],
        priority=priority,
        status="open",
        created_at=utcnow(),
    )
    with engine.begin() as connection:
        ticket_id = connection.execute(insert(SupportTicket).returning(SupportTicket.id), row)
        return Ticket(id=int(ticket_id.scalar_one()), **row)
