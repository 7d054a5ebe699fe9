"""Tickets for staff: status history, the promised response time, and the webhook outbox columns.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # SQLite cannot add a UNIQUE or a NOT NULL column without a default, so the new columns
    # are added plainly and the unique index comes after the existing rows are filled in.
    with op.batch_alter_table("support_tickets") as batch:
        batch.add_column(sa.Column("updated_at", TS, nullable=True))
        batch.add_column(sa.Column("due_at", TS, nullable=True))
        batch.add_column(sa.Column("webhook_uuid", sa.String(36), nullable=True))
        batch.add_column(
            sa.Column("sync_state", sa.String(16), nullable=False, server_default="local")
        )
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_attempt_at", TS, nullable=True))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("synced_at", TS, nullable=True))
    tickets = sa.table(
        "support_tickets",
        sa.column("id", sa.Integer()),
        sa.column("webhook_uuid", sa.String()),
        sa.column("created_at", TS),
        sa.column("updated_at", TS),
    )
    connection = op.get_bind()
    # Tickets opened before the webhook existed stay "local": they were never announced and
    # are not sent now, but each still gets its delivery id.
    ids = [row[0] for row in connection.execute(sa.select(tickets.c.id))]
    for ticket_id in ids:
        connection.execute(
            sa.update(tickets)
            .where(tickets.c.id == ticket_id)
            .values(webhook_uuid=str(uuid.uuid4()), updated_at=tickets.c.created_at)
        )
    op.create_index(
        "ux_support_tickets_webhook_uuid", "support_tickets", ["webhook_uuid"], unique=True
    )
    op.create_index(
        "ix_support_tickets_status_created", "support_tickets", ["status", "created_at"]
    )
    op.create_index(
        "ix_support_tickets_outbox", "support_tickets", ["sync_state", "next_attempt_at"]
    )

    op.create_table(
        "ticket_history",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "ticket_id",
            BigId,
            sa.ForeignKey("support_tickets.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_ticket_history_ticket_at", "ticket_history", ["ticket_id", "at"])


def downgrade() -> None:
    op.drop_table("ticket_history")
    op.drop_index("ix_support_tickets_outbox", "support_tickets")
    op.drop_index("ix_support_tickets_status_created", "support_tickets")
    op.drop_index("ux_support_tickets_webhook_uuid", "support_tickets")
    with op.batch_alter_table("support_tickets") as batch:
        for column in (
            "synced_at",
            "last_error",
            "next_attempt_at",
            "attempts",
            "sync_state",
            "webhook_uuid",
            "due_at",
            "updated_at",
        ):
            batch.drop_column(column)
