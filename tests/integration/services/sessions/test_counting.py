"""The active-sessions count on Redis (one server and a cluster): open sessions only, one scan per interval.

The suite's Redis is shared with other tests' sessions, so counts are compared, never taken as absolute."""

from __future__ import annotations

from app.services.sessions.counting import ActiveSessions
from app.services.sessions.guarded import GuardedRedis
from app.services.sessions.store import SessionStore
from tests.conftest import both_redis_backends

pytestmark = both_redis_backends


async def test_open_sessions_are_counted_and_ended_ones_are_not(
    session_redis: GuardedRedis, session_store: SessionStore
) -> None:
    opened = [await session_store.create({}, ttl_seconds=None) for _ in range(3)]
    await session_store.end(opened[0].session_id)
    fresh = ActiveSessions(session_redis, max_age=0)
    assert await fresh.count() >= 2


async def test_a_count_younger_than_max_age_is_served_without_a_scan(
    session_redis: GuardedRedis, session_store: SessionStore
) -> None:
    cached = ActiveSessions(session_redis, max_age=3600)
    counted = await cached.count()
    await session_store.create({}, ttl_seconds=None)
    assert await cached.count() == counted
