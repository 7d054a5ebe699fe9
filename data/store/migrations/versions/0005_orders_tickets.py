"""Orders the support tools look up, and the tickets and escalations the agent opens.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("order_number", sa.String(16), nullable=False, unique=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("total_usd", sa.Float(), nullable=False),
        sa.Column("placed_at", TS, nullable=False),
        sa.Column("shipped_at", TS, nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("carrier", sa.String(32), nullable=True),
        sa.Column("tracking_number", sa.String(64), nullable=True),
        sa.Column("demo", sa.Boolean(), nullable=False),
    )
    # "My recent orders" reads one user's orders newest first.
    op.create_index("ix_orders_user_placed", "orders", ["user_id", "placed_at"])
    op.create_table(
        "support_tickets",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_support_tickets_user_created", "support_tickets", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_table("support_tickets")
    op.drop_table("orders")
