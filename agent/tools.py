"""The support agent's tools (orders, help center, tickets), their telemetry, and the same facts
as prompt context for a model that cannot call tools.

Who is asking never comes from the model: every tool reads the user, session and turn of the
running turn (its `TurnContext`), so a customer cannot read another customer's order by
naming a different user. Orders come from the configured source (data/integrations/orders.py:
the team's orders API or the orders table); when it is down the model is told it cannot check
orders right now, the call is recorded as failed, and the turn goes on. The service times the
agent promises come from settings (data/config/service_times.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, cast

from langchain.agents.middleware import AgentMiddleware
from langchain.tools import ToolRuntime
from langchain_core.messages import BaseMessage, ToolMessage
from langchain_core.tools import BaseTool, ToolException, tool
from langgraph.errors import GraphBubbleUp
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command
from sqlalchemy import Engine

from agent.context import TurnContext, current_turn
from agent.knowledge import Hit, KnowledgeBase
from agent.recall import ContextUnavailable, Provided
from data.config.service_times import ServiceLevels
from data.config.settings import get_settings
from data.integrations import order_records, orders, tickets
from data.integrations.order_records import OrderView
from data.integrations.orders import OrderSource, OrdersUnavailable, TableOrders
from data.store.records import EventRecord, ToolCallDetail

log = logging.getLogger(__name__)

# Help-center hits below this cosine are noise for the model. Measured on agent/kb with the local
# MiniLM embedder: questions the entries answer score 0.25-0.87 on their best entry (short ones
# like "I want a real person" lowest), unrelated ones ("write me a poem", "hello") 0.08-0.18.
SEARCH_MIN_SCORE = 0.2
# help_context puts one entry into a small model's prompt unasked, so it must be surer.
HELP_CONTEXT_MIN_SCORE = 0.35
RECENT_ORDERS = 5
MAX_ORDERS_IN_CONTEXT = 3
RESULT_PREVIEW_CHARS = 300
TRANSCRIPT_FOR_HUMAN = 6  # messages copied into an escalation so the human has the context


def caller(runtime: Any = None) -> TurnContext | None:
    """The running turn: the TurnContext ChatService passes to the agent (`runtime.context` in a
    tool, else LangGraph's runtime), never the model's arguments; None when the run was started
    without one or without a user (the tools then refuse)."""
    context = getattr(runtime, "context", None)
    if not isinstance(context, TurnContext):
        context = current_turn()
    if context is None or not context.user_id.strip():
        return None
    return context


NO_CALLER = "I cannot tell which customer this is, so I cannot look at orders or open tickets."
CANNOT_CHECK_ORDERS = "Cannot check orders right now"


def cannot_check_orders(error: OrdersUnavailable) -> str:
    """What the model reads when the order source is down."""
    return (
        f"{CANNOT_CHECK_ORDERS}: {error}. Tell the customer that you cannot check orders "
        "right now and that they can ask again later or have a ticket opened; do not guess "
        "the order's status."
    )


def articles(hits: list[Hit]) -> list[dict[str, Any]]:
    """The help-center articles behind an answer, for the turn's event (the chat page lists
    them with their title and file)."""
    return [
        {
            "title": h.entry.title,
            "file": h.entry.file,
            "topic": h.entry.topic,
            "score": round(h.score, 4),
        }
        for h in hits
    ]


def _day(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d}" if value is not None else "-"


def describe_order(order: OrderView) -> str:
    """The order's facts as a few lines of text for the model (tools and prompt context)."""
    items = ", ".join(f"{i.qty} x {i.name} (${i.unit_usd:.2f})" for i in order.items)
    lines = [
        f"Order {order.order_number}: status {order.status}",
        f"Items: {items}; total ${order.total_usd:.2f}",
        f"Placed: {_day(order.placed_at)}",
    ]
    if order.shipped_at:
        lines.append(
            f"Shipped: {_day(order.shipped_at)} with {order.carrier}, "
            f"tracking number {order.tracking_number}"
        )
    if order.delivered_at:
        lines.append(f"Delivered: {_day(order.delivered_at)}")
    return "\n".join(lines)


def _not_an_order_number(text: str) -> str:
    return (
        f"{text!r} is not an order number. Order numbers look like A-10234 (a letter, a "
        "hyphen, five digits). Ask the customer for it, or call list_recent_orders."
    )


def make_tools(
    *,
    engine: Engine,
    knowledge: KnowledgeBase,
    orders_source: OrderSource | None = None,
    levels: ServiceLevels | None = None,
    notify: bool = False,
) -> list[BaseTool]:
    """The support tools, bound to the order source (default: the orders table), the help
    center, the tickets table and the promised service times (default: from settings). With
    `notify`, each new ticket is queued for the ticket webhook."""
    source: OrderSource = orders_source or TableOrders(engine)
    promises = levels or get_settings().service_levels()

    @tool(parse_docstring=True)
    def lookup_order(order_number: str) -> str:
        """Look up one of the customer's orders: status, items, total, when it was placed,
        shipped and delivered, the carrier and the tracking number.

        Use it whenever the customer asks about a specific order (where is it, has it
        shipped, what was in it). Only the customer's own orders can be found.

        Args:
            order_number: The order number as the customer gave it, e.g. "A-10234".
        """
        who = caller()
        if who is None:
            return NO_CALLER
        number = orders.normalize_order_number(order_number)
        if number is None:
            return _not_an_order_number(order_number)
        try:
            order = source.get_order(user_id=who.user_id, order_number=number)
        except OrdersUnavailable as error:
            raise ToolException(cannot_check_orders(error)) from None
        if order is None:
            return (
                f"No order {number} was found for this customer. Ask them to check the "
                "number, or call list_recent_orders to see their orders."
            )
        return describe_order(order)

    @tool(parse_docstring=True)
    def list_recent_orders() -> str:
        """List the customer's most recent orders (newest first) with number, status, date
        and total.

        Use it when the customer asks about "my order" without giving a number, or gives a
        number that was not found."""
        who = caller()
        if who is None:
            return NO_CALLER
        try:
            found = source.recent_orders(user_id=who.user_id, limit=RECENT_ORDERS)
        except OrdersUnavailable as error:
            raise ToolException(cannot_check_orders(error)) from None
        if not found:
            return "This customer has no orders."
        return "\n".join(
            f"{o.order_number}: {o.status}, placed {_day(o.placed_at)}, ${o.total_usd:.2f}, "
            + ", ".join(i.name for i in o.items)
            for o in found
        )

    @tool(parse_docstring=True, response_format="content_and_artifact")
    def search_help_center(query: str) -> tuple[str, dict[str, Any]]:
        """Search the help center (shipping, returns, refunds, warranty, payments, changing
        or cancelling an order, account, privacy, contacting a human) for the policy that
        answers the customer's question.

        Use it before answering any question about a policy, price, time limit or
        procedure, and answer from what it returns rather than from memory.

        Args:
            query: The customer's question in plain words, e.g. "how long does a refund
                take".
        """
        if not query.strip():
            return "The query is empty: pass the customer's question.", {}
        hits = knowledge.search(query, k=3, ref=caller())
        hits = [h for h in hits if h.score >= SEARCH_MIN_SCORE]
        if not hits:
            return (
                "The help center has no article about this. Say so, and offer to open a "
                "ticket (open_ticket) if the customer needs an answer."
            ), {"articles": []}
        text = "\n\n".join(f"## {h.entry.title}\n{h.entry.text}" for h in hits)
        return text, {"articles": articles(hits)}

    @tool(parse_docstring=True)
    def open_ticket(
        subject: str,
        details: str,
        priority: Literal["low", "normal", "high", "urgent"] = "normal",
    ) -> str:
        """Open a support ticket for something you cannot settle in this chat, such as a
        refund to issue, a damaged or missing parcel, a duplicate charge, an address change
        or a warranty claim. The result says when the support team will answer.

        Confirm with the customer before opening a ticket, then tell them its number and
        when they will hear back.

        Args:
            subject: One line saying what the ticket is about, with the order number if
                there is one.
            details: Everything the team needs: what happened, what the customer wants,
                order numbers, dates.
            priority: "urgent" only for safety or legal issues, "high" when money is at
                stake or the customer is blocked, "low" for questions, else "normal".
        """
        who = caller()
        if who is None:
            return NO_CALLER
        if not subject.strip() or not details.strip():
            return "Both subject and details are needed to open a ticket."
        ticket = tickets.create_ticket(
            engine=engine,
            user_id=who.user_id,
            session_id=who.session_id,
            turn=who.turn,
            kind="ticket",
            subject=subject,
            body=details,
            priority=priority,
            levels=promises,
            notify=notify,
        )
        return (
            f"Ticket #{ticket.id} is open (priority {ticket.priority}). The support team will "
            f"answer the customer by e-mail {promises.promise('ticket', ticket.created_at)}."
        )

    @tool(parse_docstring=True)
    def escalate_to_human(reason: str, runtime: ToolRuntime) -> str:
        """Hand the conversation to a human support agent.

        Use it when the customer asks for a person, is upset after two attempts to help,
        or needs something no tool can do (identity checks, exceptions to a policy,
        legal or safety matters). Tell the customer that a person will take over, and when.

        Args:
            reason: Why a human is needed, in one or two sentences.
        """
        who = caller(runtime)
        if who is None:
            return NO_CALLER
        if not reason.strip():
            return "Give the reason for the hand-over."
        messages: list[BaseMessage] = list(runtime.state.get("messages", []))
        recent = "\n".join(
            f"{m.type}: {m.text}" for m in messages[-TRANSCRIPT_FOR_HUMAN:] if m.text
        )
        ticket = tickets.create_ticket(
            engine=engine,
            user_id=who.user_id,
            session_id=who.session_id,
            turn=who.turn,
            kind="escalation",
            subject=f"Escalation: {reason.strip()}",
            body=f"{reason.strip()}\n\nRecent conversation:\n{recent}",
            priority="high",
            levels=promises,
            notify=notify,
        )
        return (
            f"Escalation #{ticket.id} is open. A human colleague will take over this "
            f"conversation {promises.promise('escalation', ticket.created_at)}."
        )

    for order_tool in (lookup_order, list_recent_orders):
        # An order source that is down is a failed call whose message the model reads.
        order_tool.handle_tool_error = True
    return [lookup_order, list_recent_orders, search_help_center, open_ticket, escalate_to_human]


class ToolTelemetryMiddleware(AgentMiddleware):
    """Times every tool call and records it in agent_events (kind "tool_call"); turns a tool
    that raises into an error ToolMessage so the model can recover and the turn completes."""

    def __init__(self, *, events: Callable[[EventRecord], None]) -> None:
        """`events`: the agent's event sink (the app's ledger, so the turn's outcome lists its
        tool calls)."""
        super().__init__()
        self._events = events

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        call = request.tool_call
        started = time.perf_counter()
        error: str | None = None
        try:
            result = handler(request)
        except GraphBubbleUp:  # interrupts are control flow, not failures
            raise
        except Exception as exc:
            log.warning("tool %s failed", call["name"], exc_info=True)
            error = f"{type(exc).__name__}: {exc}"[:500]
            result = ToolMessage(
                content=(
                    f"The tool {call['name']} failed ({error[:200]}). Tell the customer this "
                    "step did not work; do not invent the result."
                ),
                name=call["name"],
                tool_call_id=call["id"],
                status="error",
            )
        latency_ms = (time.perf_counter() - started) * 1000
        content = result.text if isinstance(result, ToolMessage) else ""
        if error is None and isinstance(result, ToolMessage) and result.status == "error":
            # Invalid arguments (ToolNode wrote the message) or a source that is down (the
            # tool's own message, e.g. "Cannot check orders right now: ...").
            error = content[:500]
        artifact = getattr(result, "artifact", None)
        extra = artifact if isinstance(artifact, dict) else {}
        self._record(request, latency_ms=latency_ms, error=error, content=content, extra=extra)
        return result

    def _record(
        self,
        request: ToolCallRequest,
        *,
        latency_ms: float,
        error: str | None,
        content: str,
        extra: dict[str, Any],
    ) -> None:
        who = caller(request.runtime) or TurnContext(user_id="", session_id="", turn=0)
        event = EventRecord(
            user_id=who.user_id,
            session_id=who.session_id,
            turn=who.turn,
            kind="tool_call",
            name=request.tool_call["name"],
            latency_ms=round(latency_ms, 3),
            status="error" if error else "ok",
            error=error,
            detail=cast(
                ToolCallDetail,
                {
                    "args": request.tool_call["args"],
                    "result": content[:RESULT_PREVIEW_CHARS],
                    **extra,
                },
            ),
        )
        try:
            self._events(event)
        except Exception:  # telemetry must never cost the customer their answer
            log.warning("could not record tool call %s", event.name, exc_info=True)


def order_context(source: OrderSource, user_id: str, text: str) -> str | None:
    """The facts of the orders mentioned in `text` (the user's own only), from the same order
    source as the tools, as a block for the prompt of a model that cannot call tools; None
    when the message names no order. A source that is down raises ContextUnavailable, whose
    block tells the model it cannot check orders right now."""
    numbers = order_records.order_numbers_in(text)[:MAX_ORDERS_IN_CONTEXT]
    if not numbers or not user_id:
        return None
    blocks = []
    try:
        for number in numbers:
            order = source.get_order(user_id=user_id, order_number=number)
            blocks.append(
                describe_order(order) if order else f"Order {number}: not found for this customer."
            )
    except OrdersUnavailable as error:
        raise ContextUnavailable(
            f"{CANNOT_CHECK_ORDERS}: {error}",
            block=f"Order facts: none. {cannot_check_orders(error)}",
        ) from None
    return "Order facts from the order system:\n\n" + "\n\n".join(blocks)


def help_context(
    knowledge: KnowledgeBase, text: str, *, ref: TurnContext | None = None
) -> Provided | None:
    """The help-center entry that best answers `text`, when it is a confident match, as a block
    for the prompt of a model that cannot call tools (with the article it came from, for the
    turn's event). With `ref`, the query's embedding call is recorded against that turn."""
    hits = knowledge.search(text, k=1, ref=ref)
    if not hits or hits[0].score < HELP_CONTEXT_MIN_SCORE:
        return None
    entry = hits[0].entry
    return Provided(
        text=f"Help-center article ({entry.topic}):\n## {entry.title}\n{entry.text}",
        detail={"articles": articles(hits)},
    )
