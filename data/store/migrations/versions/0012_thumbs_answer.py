"""Thumbs carry when their answer was given and which model gave it, so the feedback page filters
and counts them by one index range instead of joining every thumbs to its message and probing
the model calls of its turn (at ten million calls a 90-day range holds about 100,000 thumbs:
the model-filtered rate took about 500 ms).

`answered_at` is the answer's message time (messages are never edited). `chat_model` is the
model of the turn's last successful chat call when the thumbs was first given (NULL when the
turn made none: an answer from the response cache); thumbs given before this migration get the
same values from their message and calls.

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("feedback_thumbs") as batch:
        batch.add_column(sa.Column("answered_at", TS, nullable=True))
        batch.add_column(sa.Column("chat_model", sa.String(128), nullable=True))
    op.execute(
        "UPDATE feedback_thumbs SET answered_at = "
        "(SELECT m.created_at FROM messages m WHERE m.id = feedback_thumbs.message_id), "
        "chat_model = (SELECT c.model FROM model_calls c "
        "WHERE c.session_id = feedback_thumbs.session_id AND c.turn = feedback_thumbs.turn "
        "AND c.purpose = 'chat' AND c.status = 'ok' ORDER BY c.ts DESC, c.id DESC LIMIT 1)"
    )
    op.create_index("ix_feedback_thumbs_answered", "feedback_thumbs", ["answered_at"])
    op.create_index(
        "ix_feedback_thumbs_model_answered", "feedback_thumbs", ["chat_model", "answered_at"]
    )
    op.create_index(
        "ix_feedback_thumbs_user_answered", "feedback_thumbs", ["user_id", "answered_at"]
    )
    op.create_index("ix_feedback_thumbs_updated", "feedback_thumbs", ["updated_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_feedback_thumbs_updated", "feedback_thumbs")
    op.drop_index("ix_feedback_thumbs_user_answered", "feedback_thumbs")
    op.drop_index("ix_feedback_thumbs_model_answered", "feedback_thumbs")
    op.drop_index("ix_feedback_thumbs_answered", "feedback_thumbs")
    with op.batch_alter_table("feedback_thumbs") as batch:
        batch.drop_column("chat_model")
        batch.drop_column("answered_at")
