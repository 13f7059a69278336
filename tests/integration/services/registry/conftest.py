"""A migrated registry database per test, on SQLite (a temporary file) and on the suite's private PostgreSQL
(a fresh database each test)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.services.registry.migrate import open_engine, upgrade
from app.services.registry.store import HazardRegistry
from tests.support.postgres_process import SUPERUSER, PostgresProcess

T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    """A report time `minutes` after T0."""
    return T0 + timedelta(minutes=minutes)


async def fresh_database_url(server: PostgresProcess, template: str = "template1", owner: str = SUPERUSER) -> str:
    """A new database of the server's (from template1, which has PostGIS where the machine has it; template0 has
    not), owned by `owner`."""
    name = f"registry_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(host="127.0.0.1", port=server.port, user=SUPERUSER, database="postgres")
    try:
        await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE {template} OWNER "{owner}"')
    finally:
        await connection.close()
    return server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/registry.db"
    return await fresh_database_url(request.getfixturevalue("postgres_server"))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The test's database, migrated to the newest revision."""
    engine = open_engine(database_url, connect_timeout_s=2.0)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def registry(engine: AsyncEngine) -> HazardRegistry:
    return HazardRegistry(engine, passes_to_fix=3, max_page_size=50)


@pytest.fixture
async def sqlite_registry(tmp_path: Path) -> AsyncIterator[HazardRegistry]:
    """A registry on a migrated SQLite file alone: for tests of the rules above the database, not of databases."""
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path}/registry.db")
    await upgrade(engine)
    yield HazardRegistry(engine, passes_to_fix=3, max_page_size=50)
    await engine.dispose()
