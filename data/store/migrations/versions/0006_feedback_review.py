"""Feedback and review: chat thumbs, the review queue with its claims and 1-5 scores, and the
LangSmith outbox columns on thumbs and scores.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def _outbox_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    """The sync state every feedback row carries: a fixed LangSmith feedback id, the state, and
    the retry bookkeeping (attempts, when to try next, the last error)."""
    return [
        sa.Column("feedback_uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("sync_state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("synced_at", TS, nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "feedback_thumbs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "message_id",
            BigId,
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        *_outbox_columns(),
    )
    # The chat page reads a session's thumbs; the worker reads due items of one state.
    op.create_index("ix_feedback_thumbs_session", "feedback_thumbs", ["session_id"])
    op.create_index(
        "ix_feedback_thumbs_outbox", "feedback_thumbs", ["sync_state", "next_attempt_at"]
    )

    op.create_table(
        "review_items",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "session_id",
            sa.String(64),
            sa.ForeignKey("chat_sessions.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("reviews_required", sa.Integer(), nullable=False),
        sa.Column("assigned_to", sa.String(128), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_review_items_assigned", "review_items", ["assigned_to"])

    op.create_table(
        "review_claims",
        sa.Column("token", sa.String(36), primary_key=True),
        sa.Column(
            "item_id",
            BigId,
            sa.ForeignKey("review_items.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("claimed_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("ended_reason", sa.String(16), nullable=True),
    )
    # At most one open claim per item, whatever the application does.
    open_claim = sa.text("ended_at IS NULL")
    op.create_index(
        "ux_review_claims_open_item",
        "review_claims",
        ["item_id"],
        unique=True,
        sqlite_where=open_claim,
        postgresql_where=open_claim,
    )
    op.create_index("ix_review_claims_reviewer_open", "review_claims", ["reviewer", "ended_at"])

    op.create_table(
        "review_scores",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "item_id",
            BigId,
            sa.ForeignKey("review_items.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        *_outbox_columns(),
    )
    # One score per reviewer and item: the N-review rule counts distinct reviewers.
    op.create_index(
        "ux_review_scores_item_reviewer", "review_scores", ["item_id", "reviewer"], unique=True
    )
    op.create_index(
        "ix_review_scores_reviewer_created", "review_scores", ["reviewer", "created_at"]
    )
    op.create_index("ix_review_scores_created", "review_scores", ["created_at"])
    op.create_index("ix_review_scores_session", "review_scores", ["session_id"])
    op.create_index("ix_review_scores_outbox", "review_scores", ["sync_state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("review_scores")
    op.drop_table("review_claims")
    op.drop_table("review_items")
    op.drop_table("feedback_thumbs")
