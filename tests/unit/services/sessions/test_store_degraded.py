"""The session store with Redis unreachable: fail-open serves frames unverified and keeps their history writes
for replay; fail-closed refuses them with the store's 503."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.services.core.breakers import AsyncBreaker
from app.services.core.errors import SessionStoreUnavailable
from app.services.core.ids import SESSION_ID_BYTES
from app.services.core.redis_client import REDIS_FAILURES
from app.services.sessions.admission import CreationBudget, CreationLimits, FrameRateLimit
from app.services.sessions.guarded import GuardedRedis
from app.services.sessions.store import FrameAdmission, SessionLimits, SessionStore
from app.services.sessions.write_behind import PendingWrites

LIMITS = SessionLimits(default_ttl=60, max_ttl=3600, ended_grace=30, history_limit=3, frame_rate=FrameRateLimit(1, 2))


@pytest.fixture
async def unreachable() -> AsyncIterator[GuardedRedis]:
    # Nothing listens there; no retries, as the app's own client (redis-py's default retries with backoff: ~20 s).
    client = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    yield GuardedRedis(client, AsyncBreaker("redis", fail_max=100, reset_seconds=1, failures=REDIS_FAILURES))
    await client.aclose()


def store(calls: GuardedRedis, *, fail_open: bool) -> SessionStore:
    return SessionStore(
        calls,
        LIMITS,
        CreationBudget(calls, CreationLimits()),
        PendingWrites(10),
        fail_open=fail_open,
        clock=lambda: 1000.0,
    )


async def test_fail_open_serves_unverified_and_keeps_the_write(unreachable: GuardedRedis) -> None:
    sessions = store(unreachable, fail_open=True)
    session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
    admission = await sessions.admit_frame(session_id)
    assert admission == FrameAdmission(verified=False) and admission.degraded
    assert await sessions.record_detection(session_id, {"request_id": "r1"}, admission) is None
    [write] = list(sessions.pending)
    assert (write.session_id, json.loads(write.entry), write.counts_frame, write.at, write.verified) == (
        session_id,
        {"request_id": "r1"},
        True,
        1000.0,
        False,
    )


async def test_a_frame_with_a_kept_tracking_update_is_kept_without_trying_redis(unreachable: GuardedRedis) -> None:
    calls: list[str] = []
    sessions = store(
        GuardedRedis(unreachable.client, unreachable.breaker, lambda name, *_: calls.append(name)), fail_open=True
    )
    session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
    kept = await sessions.record_detection(session_id, {}, FrameAdmission(verified=True), tracking="update")
    assert kept is None
    assert [(write.verified, write.counts_frame, write.tracking) for write in sessions.pending] == [
        (True, False, "update")
    ]
    assert calls == []  # no call was made


async def test_fail_closed_refuses_frames_it_cannot_check(unreachable: GuardedRedis) -> None:
    with pytest.raises(SessionStoreUnavailable):
        await store(unreachable, fail_open=False).admit_frame(secrets.token_urlsafe(SESSION_ID_BYTES))
