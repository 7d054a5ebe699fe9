"""Budgets: per-scope spending limits, their change history, in-flight reservations and the
threshold crossings already alerted; an index for per-user spend on the session rollup.

Revision ID: 0009 (step 0011: ids came out of order and are kept for existing databases)
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("scope_kind", sa.String(8), nullable=False),
        sa.Column("scope_value", sa.String(128), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("limit_usd", sa.Float(), nullable=False),
        sa.Column("warn_fraction", sa.Float(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_index("ix_budgets_active", "budgets", ["active"])
    op.create_table(
        "budget_changes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("budget_id", BigId, nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
    )
    op.create_index("ix_budget_changes_budget_ts", "budget_changes", ["budget_id", "ts"])
    op.create_table(
        "budget_reservations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("amount_usd", sa.Float(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index(
        "ix_budget_reservations_user_expires", "budget_reservations", ["user_id", "expires_at"]
    )
    op.create_index("ix_budget_reservations_expires", "budget_reservations", ["expires_at"])
    op.create_table(
        "budget_alerts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("budget_id", BigId, nullable=False),
        sa.Column("period_start", TS, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("spent_usd", sa.Float(), nullable=False),
        sa.Column("limit_usd", sa.Float(), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("delivery_error", sa.Text(), nullable=True),
    )
    op.create_index(
        "ux_budget_alerts_crossing",
        "budget_alerts",
        ["budget_id", "period_start", "level"],
        unique=True,
    )
    # Per-user and per-prefix spend reads the session rollup by user over a period.
    op.create_index(
        "ix_rollup_session_hourly_user_hour", "rollup_session_hourly", ["user_id", "hour"]
    )


def downgrade() -> None:
    op.drop_index("ix_rollup_session_hourly_user_hour", "rollup_session_hourly")
    for table in ("budget_alerts", "budget_reservations", "budget_changes", "budgets"):
        op.drop_table(table)
