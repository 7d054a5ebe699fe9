"""The demo history's support side: an order per conversation (items, carrier, tracking, a
status at each moment) and the agent events of every turn (the memory recall, the tools the
question needs, now and then a hand-over), in the shapes the agent records."""

from __future__ import annotations

import json
import math
import random
from datetime import datetime, timedelta
from typing import Any

CATALOG = (
    ("Trail running shoes", 89.00),
    ("Wireless headphones", 129.00),
    ("Merino wool socks (3 pack)", 24.50),
    ("Rain jacket", 149.00),
    ("Insulated water bottle", 19.90),
    ("Yoga mat", 39.00),
    ("Daypack 22 l", 79.00),
    ("Fleece pullover", 69.00),
    ("Bluetooth speaker", 59.00),
    ("Cotton T-shirt", 22.00),
)


CARRIERS = ("UPS", "FedEx", "USPS", "DHL")


# Typical latencies of the agent's steps: a recall embeds the message and searches memory; the
# help-center search embeds the query; the others are one or two indexed queries.
RECALL_LATENCY_MS = 24.0


TOOL_LATENCY_MS = {
    "lookup_order": 9.0,
    "list_recent_orders": 12.0,
    "search_help_center": 38.0,
    "open_ticket": 16.0,
    "escalate_to_human": 21.0,
}


ESCALATION_RATE = 0.02


# Facts the agent keeps about a customer (agent/facts.py's kinds), as a recall returns them.
MEMORIES = (
    ("order_number", "The customer's order number is {order}."),
    ("email", "The customer's e-mail address is {user}@example.com."),
    ("problem", "The customer's problem: “{ask}”"),
    ("promise", "The agent promised to e-mail an update about {order}."),
)


STEP_ERROR_RATE = 0.008


STEP_ERRORS = (
    "OperationalError: connection to the database timed out",
    "TimeoutError: the embedding model did not answer within 5 s",
)


def _lognormal(rng: random.Random, mean: float, sigma: float) -> float:
    return rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)


def _order_number(index: int, seed: int) -> str:
    """A unique, random-looking order number for the `index`-th demo order: 48,271 is prime to
    90,000, so the five digits run through all 90,000 values before the letter moves on."""
    digits = 10_000 + (index * 48_271 + seed * 1009) % 90_000
    return f"{chr(ord('A') + index // 90_000)}-{digits}"


def _order(
    rng: random.Random, *, number: str, user: str, placed_at: datetime, fate: str | None = None
) -> dict[str, Any]:
    """A demo order's whole timeline; `fate` is how it ends: "delivered", "returned" or
    "cancelled" (random when not given). `_settle` turns it into a row as of a moment."""
    picks = rng.sample(CATALOG, rng.choices((1, 2, 3), weights=(0.6, 0.3, 0.1))[0])
    items: list[dict[str, Any]] = [
        {"name": name, "qty": 2 if price < 30 and rng.random() < 0.3 else 1, "unit_usd": price}
        for name, price in picks
    ]
    carrier = rng.choices(CARRIERS, weights=(0.4, 0.25, 0.25, 0.1))[0]
    shipped_at = placed_at + timedelta(hours=rng.uniform(6, 48))
    delivered_at = shipped_at + timedelta(days=rng.uniform(2, 6))
    return dict(
        order_number=number,
        user_id=user,
        fate=fate or rng.choices(("delivered", "returned", "cancelled"), (0.9, 0.06, 0.04))[0],
        items=json.dumps(items),
        total_usd=round(sum(i["qty"] * i["unit_usd"] for i in items), 2),
        placed_at=placed_at,
        shipped_at=shipped_at,
        delivered_at=delivered_at,
        returned_at=delivered_at + timedelta(days=rng.uniform(3, 14)),
        carrier=carrier,
        tracking_number=_tracking_number(rng, carrier),
        demo=True,
    )


def _tracking_number(rng: random.Random, carrier: str) -> str:
    """A tracking number in the carrier's usual shape."""
    if carrier == "UPS":
        return "1Z" + "".join(rng.choices("0123456789ABCDEFGHJKLMNPRSTUVWXYZ", k=16))
    length, prefix = {"FedEx": (12, ""), "USPS": (18, "9400"), "DHL": (10, "")}[carrier]
    return prefix + "".join(rng.choices("0123456789", k=length))


def _status_at(order: dict[str, Any], at: datetime) -> str:
    """The order's status at `at`, from its timeline (a cancellation comes 3 hours in)."""
    if at < order["placed_at"] + timedelta(minutes=20):
        return "placed"
    if order["fate"] == "cancelled" and at >= order["placed_at"] + timedelta(hours=3):
        return "cancelled"
    if at < order["shipped_at"]:
        return "paid"
    if at < order["delivered_at"]:
        return "shipped"
    return "returned" if order["fate"] == "returned" and at >= order["returned_at"] else "delivered"


def _settle(order: dict[str, Any], end: datetime) -> dict[str, Any]:
    """The orders row for an order's timeline as of `end`: what has not happened yet is empty."""
    status = _status_at(order, end)
    row = {k: v for k, v in order.items() if k not in ("fate", "returned_at")}
    row["status"] = status
    if status in ("placed", "paid", "cancelled"):
        row |= dict(shipped_at=None, carrier=None, tracking_number=None)
    if status in ("placed", "paid", "cancelled", "shipped"):
        row["delivered_at"] = None
    return row


def _turn_events(
    rng: random.Random,
    *,
    at: datetime,
    user: str,
    session_id: str,
    turn: int,
    ask: str,
    tools: tuple[str, ...],
    order: dict[str, Any],
) -> list[dict[str, Any]]:
    """The agent_events of one turn whose answer started at `at`: the memory recall, then the
    tools the question needs (run in parallel), now and then a hand-over to a human."""
    failed = rng.random() < STEP_ERROR_RATE
    hits = 0 if failed else rng.choices(range(5), weights=(0.35, 0.25, 0.2, 0.12, 0.08))[0]
    recall = _lognormal(rng, RECALL_LATENCY_MS, 0.5)
    # What the chat page lists under the answer, in the shape agent/recall.py records.
    scores = sorted((rng.uniform(0.7, 0.95) for _ in range(hits)), reverse=True)
    memories = [
        {
            "text": text.format(order=order["order_number"], user=user, ask=ask),
            "kind": kind,
            "score": round(score, 4),
        }
        for (kind, text), score in zip(rng.sample(MEMORIES, hits), scores, strict=True)
    ]
    rows = [
        dict(
            ts=at - timedelta(milliseconds=recall + 400),
            user_id=user,
            session_id=session_id,
            turn=turn,
            kind="memory_recall",
            name="memory",
            latency_ms=round(recall, 3),
            status="error" if failed else "ok",
            error=rng.choice(STEP_ERRORS) if failed else None,
            hits=None if failed else hits,
            top_score=memories[0]["score"] if hits else None,
            detail=None if failed else json.dumps({"queries": 1, "memories": memories}),
        )
    ]
    if tools and rng.random() < ESCALATION_RATE:
        tools = (*tools, "escalate_to_human")
    status = _status_at(order, at)
    for name in tools:
        args, result = {
            "lookup_order": (
                {"order_number": order["order_number"]},
                f"Order {order['order_number']}: status {status}",
            ),
            "list_recent_orders": (
                {},
                f"{order['order_number']}: {status}, placed {order['placed_at']:%Y-%m-%d}, "
                f"${order['total_usd']:.2f}",
            ),
            "search_help_center": ({"query": ask}, "Help-center articles matching the question"),
            "open_ticket": (
                {"subject": ask[:80], "details": ask, "priority": "normal"},
                "Ticket is open (priority normal).",
            ),
            "escalate_to_human": (
                {"reason": "The customer asked to talk to a person."},
                "Escalation is open.",
            ),
        }[name]
        failed = rng.random() < STEP_ERROR_RATE
        error = rng.choice(STEP_ERRORS) if failed else None
        latency = _lognormal(rng, TOOL_LATENCY_MS[name], 0.6)
        rows.append(
            dict(
                ts=at - timedelta(milliseconds=300),
                user_id=user,
                session_id=session_id,
                turn=turn,
                kind="tool_call",
                name=name,
                latency_ms=round(latency, 3),
                status="error" if failed else "ok",
                error=error,
                hits=None,
                top_score=None,
                detail=json.dumps({"args": args, "result": error or result}),
            )
        )
    return rows
