"""The sighting buffer: kept in order while the database is down, bounded, replayed oldest first."""

from __future__ import annotations

from datetime import UTC, datetime

from app.services.core.errors import RegistryUnavailable
from app.services.registry.pending import SightingBuffer
from app.services.registry.records import Sighting, SightingOutcome


def sighting(key: str) -> Sighting:
    return Sighting("t", key, "pothole", 50.0, 4.0, None, datetime(2025, 1, 1, tzinfo=UTC))


class Database:
    """A stand-in for HazardRegistry.apply_sighting that can be down."""

    def __init__(self) -> None:
        self.up = True
        self.written: list[str] = []

    async def apply(self, item: Sighting) -> SightingOutcome:
        if not self.up:
            raise RegistryUnavailable()
        self.written.append(item.map_key)
        return "created"


async def test_sightings_kept_while_down_are_replayed_in_order() -> None:
    database = Database()
    buffer = SightingBuffer(database.apply)
    assert await buffer.report(sighting("a")) == "created"
    database.up = False
    assert await buffer.report(sighting("b")) is None
    assert not buffer.healthy
    database.up = True
    assert await buffer.report(sighting("c")) is None  # queued behind b, so order is kept
    assert await buffer.replay() == 2
    assert database.written == ["a", "b", "c"]
    assert buffer.healthy and len(buffer) == 0


async def test_a_replay_stops_when_the_database_fails_again() -> None:
    database = Database()
    database.up = False
    buffer = SightingBuffer(database.apply)
    for key in "abc":
        await buffer.report(sighting(key))
    assert await buffer.replay() == 0
    assert len(buffer) == 3 and not buffer.healthy


async def test_past_the_limit_the_oldest_kept_sighting_goes() -> None:
    database = Database()
    database.up = False
    buffer = SightingBuffer(database.apply, limit=2)
    for key in "abc":
        await buffer.report(sighting(key))
    database.up = True
    await buffer.replay()
    assert database.written == ["b", "c"]
    assert buffer.dropped == 1
