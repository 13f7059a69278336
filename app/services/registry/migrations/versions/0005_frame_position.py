"""Hazards' positions in the fleet map's frame: where the map placed each entry less its vehicles' GPS offsets, so
that two hazards side by side keep their places whichever vehicles reported each (passes compare detections there).
Empty for rows written before: those compare at their shown position.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("hazards", sa.Column("frame_lat", sa.Double, nullable=True))
    op.add_column("hazards", sa.Column("frame_lon", sa.Double, nullable=True))


def downgrade() -> None:  # SQLite drops a column since 3.35 (Debian 12 has 3.40)
    op.drop_column("hazards", "frame_lon")
    op.drop_column("hazards", "frame_lat")
