"""The migrations build exactly the tables the code declares, and go back down cleanly."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.registry.migrate import downgrade, upgrade
from app.services.registry.spatial import POSTGIS_TABLES, include_object
from app.services.registry.tables import metadata

# Reflection of `hazards` on PostGIS meets the geometry type, which SQLAlchemy has no class for (the comparison
# leaves that column out).
pytestmark = pytest.mark.filterwarnings("ignore:Did not recognize type 'geometry'")


def differences(connection: sa.Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"include_object": include_object})
    return list(compare_metadata(context, metadata))


async def test_the_migrated_schema_matches_the_tables(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_migrations_go_down_and_up_again(engine: AsyncEngine) -> None:
    await downgrade(engine)
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    assert set(names) <= {"alembic_version", *POSTGIS_TABLES}  # the extension stays in the database
    await upgrade(engine)
    await upgrade(engine)  # already at head: nothing to do
    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []
