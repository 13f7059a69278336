"""PostGIS, where the server has it: a `geom geometry(Point, 4326)` column generated from lat/lon (always in step)
with a GiST index, so QGIS and ArcGIS open the hazards table as a layer. SQLite, or a PostgreSQL without the
extension (or without the right to create it), keep the plain lat/lon columns and their index: nothing to do.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
import structlog
from alembic import op
from sqlalchemy.engine import Connection

from app.services.registry.spatial import GEOMETRY_COLUMN, GEOMETRY_INDEX

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

log = structlog.get_logger(__name__)


def postgis_installed(connection: Connection) -> bool:
    """PostGIS is in this database now, or could be created here (available on the server, and allowed)."""
    if connection.scalar(sa.text("SELECT count(*) FROM pg_extension WHERE extname = 'postgis'")):
        return True
    if not connection.scalar(sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis'")):
        log.info("registry_postgis_not_available")
        return False
    savepoint = connection.begin_nested()  # a refused CREATE EXTENSION must not abort the migration's transaction
    try:
        connection.execute(sa.text("CREATE EXTENSION IF NOT EXISTS postgis"))
    except sa.exc.DBAPIError as exc:  # e.g. not a superuser: PostGIS is not a trusted extension
        savepoint.rollback()
        log.warning("registry_postgis_not_created", error=str(exc.orig)[:200])
        return False
    savepoint.commit()
    return True


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql" or not postgis_installed(connection):
        return
    op.execute(
        f"ALTER TABLE hazards ADD COLUMN {GEOMETRY_COLUMN} geometry(Point, 4326) "
        "GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lon, lat), 4326)) STORED"
    )
    op.execute(f"CREATE INDEX {GEOMETRY_INDEX} ON hazards USING gist ({GEOMETRY_COLUMN})")


def downgrade() -> None:
    # The extension stays: it belongs to the database (and may serve others), not to this table.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {GEOMETRY_INDEX}")
        op.execute(f"ALTER TABLE hazards DROP COLUMN IF EXISTS {GEOMETRY_COLUMN}")
