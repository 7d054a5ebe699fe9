"""Maintenance runs (ANALYZE, VACUUM, retention, backups and their checks) and the time indexes
that retention deletes by.

Revision ID: 0011 (step 0008: ids came out of order and are kept for existing databases)
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "maintenance_runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(24), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    # The status page reads the latest run of each task.
    op.create_index("ix_maintenance_runs_task_started", "maintenance_runs", ["task", "started_at"])
    # Retention deletes old events and messages by time, in batches.
    op.create_index("ix_agent_events_ts", "agent_events", ["ts"])
    op.create_index("ix_messages_created_at", "messages", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_created_at", "messages")
    op.drop_index("ix_agent_events_ts", "agent_events")
    op.drop_table("maintenance_runs")
