"""The registry's first tables: hazards, their append-only history, and the passes that may find them fixed.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

AwareDateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hazards",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("map_key", sa.String(128), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("lat", sa.Double, nullable=False),
        sa.Column("lon", sa.Double, nullable=False),
        sa.Column("uncertainty_m", sa.Double, nullable=True),
        sa.Column("first_reported_at", AwareDateTime, nullable=False),
        sa.Column("last_reported_at", AwareDateTime, nullable=False),
        sa.Column("updated_at", AwareDateTime, nullable=False),
        sa.Column("reports", sa.Integer, nullable=False),
        sa.Column("best_photo_url", sa.Text, nullable=True),
        sa.UniqueConstraint("tenant", "map_key", name="uq_hazards_tenant_map_key"),
    )
    op.create_index("ix_hazards_lat_lon", "hazards", ["lat", "lon"])
    op.create_index("ix_hazards_tenant_status", "hazards", ["tenant", "status"])
    op.create_index("ix_hazards_last_reported_at", "hazards", ["last_reported_at"])
    op.create_table(
        "hazard_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hazard_id", sa.Integer, sa.ForeignKey("hazards.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", AwareDateTime, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("move", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(32), nullable=True),
        sa.Column("to_status", sa.String(32), nullable=False),
        sa.Column("category", sa.String(32), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
    )
    op.create_index("ix_hazard_events_hazard_id", "hazard_events", ["hazard_id", "id"])
    op.create_table(
        "passes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hazard_id", sa.Integer, sa.ForeignKey("hazards.id", ondelete="CASCADE"), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("at", AwareDateTime, nullable=False),
        sa.Column("saw_it", sa.Boolean, nullable=False),
        sa.UniqueConstraint("hazard_id", "session_id", "at", name="uq_passes_hazard_session_at"),
    )


def downgrade() -> None:
    op.drop_table("passes")
    op.drop_index("ix_hazard_events_hazard_id", table_name="hazard_events")
    op.drop_table("hazard_events")
    op.drop_index("ix_hazards_last_reported_at", table_name="hazards")
    op.drop_index("ix_hazards_tenant_status", table_name="hazards")
    op.drop_index("ix_hazards_lat_lon", table_name="hazards")
    op.drop_table("hazards")
