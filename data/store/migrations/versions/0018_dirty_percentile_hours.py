"""The hours whose hour percentiles wait to be recomputed (rollup_dirty_percentile_hours): a
refresh after one chat turn queues its hour here instead of sorting every call of the hour, and
the background settle that already recomputes the day percentiles recomputes these too. Until
then a read computes a queued hour's percentiles from the raw rows, as for a queued day.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollup_dirty_percentile_hours",
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
    )


def downgrade() -> None:
    # The queued hours' stored percentiles may be stale: recompute them on the next refresh.
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "INSERT INTO rollup_dirty (hour) SELECT hour FROM rollup_dirty_percentile_hours "
            "ON CONFLICT DO NOTHING"
        )
    else:
        op.execute(
            "INSERT OR IGNORE INTO rollup_dirty (hour) SELECT hour FROM "
            "rollup_dirty_percentile_hours"
        )
    op.drop_table("rollup_dirty_percentile_hours")
