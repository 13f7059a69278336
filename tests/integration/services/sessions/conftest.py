"""The session store's parts on the suite's Redis (ids are random, so tests share it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from app.services.core.breakers import AsyncBreaker
from app.services.core.redis_client import REDIS_BREAKER_FAILURES, create_redis
from app.services.sessions.admission import CreationBudget, CreationLimits, FrameRateLimit
from app.services.sessions.guarded import GuardedRedis
from app.services.sessions.store import SessionLimits, SessionStore
from app.services.sessions.write_behind import PendingWrites
from app.settings import Settings

LIMITS = SessionLimits(default_ttl=60, max_ttl=3600, ended_grace=30, history_limit=3, frame_rate=FrameRateLimit(1, 2))


@pytest.fixture
async def session_redis(make_settings: Callable[..., Settings]) -> AsyncIterator[GuardedRedis]:
    client = create_redis(make_settings().redis)
    yield GuardedRedis(client, AsyncBreaker("redis", fail_max=3, reset_seconds=1.0, failures=REDIS_BREAKER_FAILURES))
    await client.aclose()


@pytest.fixture
def session_store(session_redis: GuardedRedis) -> SessionStore:
    return SessionStore(
        session_redis,
        LIMITS,
        CreationBudget(session_redis, CreationLimits()),
        PendingWrites(10),
        fail_open=True,
    )
