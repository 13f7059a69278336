"""Sightings: which session reported a hazard, and when. A report the map moved on to another entry (a twin beside
it) is taken back by its session's next pass that saw nothing, so only the sightings that stand hold off the clean
passes that find a hazard fixed.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

AwareDateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sightings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hazard_id", sa.Integer, sa.ForeignKey("hazards.id", ondelete="CASCADE"), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=True),
        sa.Column("at", AwareDateTime, nullable=False),
    )
    op.create_index("ix_sightings_hazard_at", "sightings", ["hazard_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_sightings_hazard_at", table_name="sightings")
    op.drop_table("sightings")
