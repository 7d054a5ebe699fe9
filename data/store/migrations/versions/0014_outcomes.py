"""Conversation outcomes: a conversation can be closed on purpose (chat_sessions.closed_at),
the end detector finds ended conversations by their last message (an index on updated_at),
ended conversations wait in outcome_jobs for a judge worker's lease, every verdict is kept in
conversation_outcomes, and a reviewer's score carries their own outcome and topic.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("chat_sessions") as batch:
        batch.add_column(sa.Column("closed_at", TS, nullable=True))
    op.create_index("ix_chat_sessions_updated", "chat_sessions", ["updated_at"])
    with op.batch_alter_table("review_scores") as batch:
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("topic", sa.String(64), nullable=True))
    op.create_table(
        "outcome_jobs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("last_message_at", TS, nullable=False),
        sa.Column("end_reason", sa.String(8), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("lease_token", sa.String(36), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.UniqueConstraint("session_id", "last_message_at", name="uq_outcome_jobs_session_end"),
    )
    op.create_index(
        "ix_outcome_jobs_pending",
        "outcome_jobs",
        ["created_at"],
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "conversation_outcomes",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("ended_at", TS, nullable=False),
        sa.Column("end_reason", sa.String(8), nullable=False),
        sa.Column("judged_at", TS, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("topic", sa.String(64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("quote", sa.Text(), nullable=True),
        sa.Column("quote_found", sa.Boolean(), nullable=False),
        sa.Column("decided_by", sa.String(8), nullable=False),
        sa.Column("judge_model", sa.String(128), nullable=True),
        sa.Column("rubric_version", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("reopened", sa.Boolean(), nullable=False),
        sa.Column("current", sa.Boolean(), nullable=False),
        sa.Column("chat_model", sa.String(128), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("peak_context_percent", sa.Float(), nullable=True),
        sa.Column("summarizations", sa.Integer(), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("demo", sa.Boolean(), nullable=False),
    )
    op.create_index(
        "ix_conversation_outcomes_session", "conversation_outcomes", ["session_id", "id"]
    )
    op.create_index(
        "ix_conversation_outcomes_current_ended", "conversation_outcomes", ["current", "ended_at"]
    )
    op.create_index("ix_conversation_outcomes_ended", "conversation_outcomes", ["ended_at"])


def downgrade() -> None:
    op.drop_table("conversation_outcomes")
    op.drop_table("outcome_jobs")
    with op.batch_alter_table("review_scores") as batch:
        batch.drop_column("topic")
        batch.drop_column("outcome")
    op.drop_index("ix_chat_sessions_updated", "chat_sessions")
    with op.batch_alter_table("chat_sessions") as batch:
        batch.drop_column("closed_at")
