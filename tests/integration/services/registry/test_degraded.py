"""A registry whose database goes away keeps sightings and writes every one when it returns."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.services.registry.migrate import open_engine, upgrade
from app.services.registry.pending import SightingBuffer
from app.services.registry.records import HazardFilter, Sighting
from app.services.registry.store import HazardRegistry
from tests.integration.services.registry.conftest import at, fresh_database_url
from tests.support.postgres_process import PostgresProcess


def sightings(count: int) -> list[Sighting]:
    return [Sighting("city", f"m{i}", "pothole", 50.0 + i * 1e-3, 4.0, 2.0, at(i)) for i in range(count)]


async def test_a_locked_sqlite_file_keeps_sightings_and_replays_them(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    engine = open_engine(f"sqlite+aiosqlite:///{path}", connect_timeout_s=0.2)
    await upgrade(engine)
    registry = HazardRegistry(engine)
    buffer = SightingBuffer(registry.apply_sighting)
    assert await buffer.report(sightings(1)[0]) == "created"
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process holds the file: every write fails "database is locked"
    try:
        for sighting in sightings(5)[1:]:
            assert await buffer.report(sighting) is None
        assert not buffer.healthy
        assert await buffer.replay() == 0
    finally:
        lock.execute("COMMIT")
        lock.close()
    assert await buffer.replay() == 4
    assert buffer.healthy
    page = await registry.query(HazardFilter())
    assert [(h.map_key, h.reports) for h in page.items] == [(f"m{i}", 1) for i in range(5)]
    await engine.dispose()


async def test_a_stopped_postgresql_keeps_sightings_and_replays_them(postgres_server: PostgresProcess) -> None:
    engine = open_engine(await fresh_database_url(postgres_server), connect_timeout_s=2.0)
    await upgrade(engine)
    registry = HazardRegistry(engine)
    buffer = SightingBuffer(registry.apply_sighting)
    assert await buffer.report(sightings(1)[0]) == "created"
    postgres_server.stop()
    try:
        for sighting in sightings(5)[1:]:
            assert await buffer.report(sighting) is None
        assert not buffer.healthy
    finally:
        postgres_server.start()
    assert await buffer.replay() == 4
    assert buffer.healthy
    page = await registry.query(HazardFilter())
    assert [(h.map_key, h.reports) for h in page.items] == [(f"m{i}", 1) for i in range(5)]
    await engine.dispose()


@pytest.mark.parametrize("count", [3])
async def test_a_replayed_sighting_that_was_written_counts_once(registry: HazardRegistry, count: int) -> None:
    for sighting in sightings(count):
        await registry.apply_sighting(sighting)
    buffer = SightingBuffer(registry.apply_sighting)
    for sighting in sightings(count):  # the database took them but the answer was lost: they come back
        assert await buffer.report(sighting) == "duplicate"
    assert [h.reports for h in (await registry.query(HazardFilter())).items] == [1] * count
