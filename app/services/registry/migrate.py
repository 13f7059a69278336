"""Schema migrations, run programmatically at start (no alembic.ini): `await upgrade(engine)` (or a URL) brings the
database to the newest revision; `open_engine(url)` makes the engine the registry and the migrations share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEFAULT_URL = "sqlite+aiosqlite:///var/registry.db"
MIGRATION_COMMAND_TIMEOUT_S = 300.0  # a migration's statement may take long: creating PostGIS takes seconds


def open_engine(
    url: str = DEFAULT_URL, *, connect_timeout_s: float = 5.0, command_timeout_s: float | None = None
) -> AsyncEngine:
    """An engine that notices a restarted server (pre-ping) and gives up on an unreachable or locked one after
    `connect_timeout_s` (and on a PostgreSQL statement after `command_timeout_s`, by default the same), so a down
    registry degrades instead of hanging its callers."""
    if url.startswith("sqlite"):
        _ensure_sqlite_folder(url)
        engine = create_async_engine(url, connect_args={"timeout": connect_timeout_s})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_pre_ping=True,
        connect_args={"timeout": connect_timeout_s, "command_timeout": command_timeout_s or connect_timeout_s},
    )


def _ensure_sqlite_folder(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Foreign keys are off by default in SQLite; WAL lets exports read while sightings are written.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine | str, revision: str = "head", *, connect_timeout_s: float = 5.0) -> None:
    """Migrate the database (an engine, or a URL) to `revision` (the newest by default), in one transaction. A URL
    gets an engine of its own whose statements may take MIGRATION_COMMAND_TIMEOUT_S (the service migrates so)."""
    if isinstance(engine, str):
        owned = open_engine(engine, connect_timeout_s=connect_timeout_s, command_timeout_s=MIGRATION_COMMAND_TIMEOUT_S)
        try:
            await upgrade(owned, revision)
        finally:
            await owned.dispose()
        return
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))
