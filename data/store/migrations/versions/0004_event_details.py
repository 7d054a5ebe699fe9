"""Agent event details: summarization events (tokens before and after, messages folded, model)
and a JSON detail (the memories recalled, a tool's arguments and result) for the chat page.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_events") as batch:
        batch.add_column(sa.Column("model", sa.String(128), nullable=True))
        batch.add_column(sa.Column("tokens_before", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tokens_after", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("messages_folded", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("detail", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agent_events") as batch:
        for column in ("detail", "messages_folded", "tokens_after", "tokens_before", "model"):
            batch.drop_column(column)
