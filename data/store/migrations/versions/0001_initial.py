"""Chat sessions, messages, model calls and the seed's conversation_metadata view.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

# The seed (section 4.1) tunes `SELECT * FROM conversation_metadata WHERE user_id = ... AND
# timestamp > NOW() - INTERVAL '7 days'`. A plain view over model_calls keeps one source of
# truth; Postgres inlines it, so the query uses ix_model_calls_user_ts.
CONVERSATION_METADATA = """
CREATE VIEW conversation_metadata AS
SELECT id AS call_id, ts AS "timestamp", user_id, session_id, turn, purpose, provider, model,
       input_tokens, cached_input_tokens, output_tokens, cost_usd, cost_status, latency_ms,
       ttft_ms, context_tokens, context_window, status
FROM model_calls
"""


def upgrade() -> None:
    op.create_table(
        "chat_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("demo", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_chat_sessions_user_updated", "chat_sessions", ["user_id", "updated_at"])
    op.create_table(
        "messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "session_id",
            sa.String(64),
            sa.ForeignKey("chat_sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_messages_session_turn", "messages", ["session_id", "turn"])
    op.create_table(
        "model_calls",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("ts", TS, nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("turn", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("usage_source", sa.String(16), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("cost_status", sa.String(16), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("context_tokens", sa.Integer(), nullable=False),
        sa.Column("context_window", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("demo", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_model_calls_ts", "model_calls", ["ts"])
    op.create_index("ix_model_calls_user_ts", "model_calls", ["user_id", "ts"])
    op.create_index("ix_model_calls_session_turn", "model_calls", ["session_id", "turn"])
    op.create_index("ix_model_calls_model_ts", "model_calls", ["model", "ts"])
    op.execute(CONVERSATION_METADATA)


def downgrade() -> None:
    op.execute("DROP VIEW conversation_metadata")
    op.drop_table("model_calls")
    op.drop_table("messages")
    op.drop_table("chat_sessions")
