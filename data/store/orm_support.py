"""The support systems' tables: orders, the tickets and escalations the agent opens, and each
ticket's history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from data.store.orm import Base, BigId, UTCDateTime, utcnow

ORDER_STATUSES = ("placed", "paid", "shipped", "delivered", "returned", "cancelled")


class Order(Base):
    """A customer's order, as the support tools look it up (demo rows are flagged)."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_number: Mapped[str] = mapped_column(String(16), unique=True)  # "A-10234"
    user_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # one of ORDER_STATUSES
    # JSON list of {"name", "qty", "unit_usd"}: read whole, never queried inside.
    items: Mapped[str] = mapped_column(Text)
    total_usd: Mapped[float] = mapped_column(Float)
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    carrier: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tracking_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    demo: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_orders_user_placed", "user_id", "placed_at"),)


SYNC_STATES = ("pending", "synced", "failed", "local")


TICKET_KINDS = ("ticket", "escalation")


TICKET_PRIORITIES = ("low", "normal", "high", "urgent")


class SupportTicket(Base):
    """A ticket or a hand-over to a human that the agent opened during a chat turn."""

    __tablename__ = "support_tickets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(128))
    session_id: Mapped[str] = mapped_column(String(64))
    turn: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # one of TICKET_KINDS
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(String(16))  # one of TICKET_PRIORITIES
    status: Mapped[str] = mapped_column(String(16), default="open")  # one of TICKET_STATUSES
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When the promised response is due (TICKET_RESPONSE_TIME / ESCALATION_RESPONSE_TIME of
    # business hours after it was opened); None for tickets older than the promise.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Webhook outbox: the delivery id is fixed when the ticket is written, so a retry is the
    # same delivery to the receiver. "local" when no TICKET_WEBHOOK_URL was set at the time.
    webhook_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    sync_state: Mapped[str] = mapped_column(String(16), default="local")  # SYNC_STATES
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_support_tickets_user_created", "user_id", "created_at"),
        Index("ix_support_tickets_status_created", "status", "created_at"),
        Index("ix_support_tickets_outbox", "sync_state", "next_attempt_at"),
        Index("ux_support_tickets_webhook_uuid", "webhook_uuid", unique=True),
    )


TICKET_STATUSES = ("open", "in_progress", "resolved")


class TicketHistory(Base):
    """Every change of a ticket: its creation and each status move, who made it, and the note."""

    __tablename__ = "ticket_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("support_tickets.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(128))  # "agent" for the creation in a chat turn
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_ticket_history_ticket_at", "ticket_id", "at"),)
