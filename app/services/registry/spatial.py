"""Which spatial index the registry has: PostGIS (a generated `geom` point column with a GiST index, made by
migration 0003 where the server has the extension) or the plain lat/lon index everywhere else. The geometry lives
in the database only (the tables in `tables.py` are the same on every database): the schema comparison leaves
PostGIS's objects out."""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

GEOMETRY_COLUMN = "geom"
GEOMETRY_INDEX = "ix_hazards_geom"
POSTGIS_TABLES = frozenset({"spatial_ref_sys"})  # the extension's own, in the public schema

SpatialIndex = Literal["postgis", "lat_lon"]


async def spatial_index(engine: AsyncEngine) -> SpatialIndex:
    """`postgis` when the hazards table has its geometry column, else `lat_lon`."""
    if engine.dialect.name != "postgresql":
        return "lat_lon"
    query = sa.text(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'hazards' AND column_name = :column"
    )
    async with engine.connect() as connection:
        found = await connection.scalar(query, {"column": GEOMETRY_COLUMN})
    return "postgis" if found else "lat_lon"


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Alembic's schema comparison filter: PostGIS's column, index and tables are not in `tables.py` on purpose."""
    if type_ == "table":
        return name not in POSTGIS_TABLES
    if type_ == "column":
        return name != GEOMETRY_COLUMN
    if type_ == "index":
        return name != GEOMETRY_INDEX
    return True
