"""Each client's session-creation budget on Redis (one server and a cluster): sessions per minute with a burst,
and TTL-seconds refilled over an hour."""

from __future__ import annotations

import uuid

import pytest

from app.services.core.errors import SessionCreationLimited
from app.services.sessions.admission import CreationBudget, CreationLimits, creation_key
from app.services.sessions.guarded import GuardedRedis
from tests.conftest import DirectRedis, both_redis_backends

pytestmark = both_redis_backends


def budget(session_redis: GuardedRedis, *, burst: int = 60, ttl_budget_seconds: int = 7 * 86400) -> CreationBudget:
    """A budget of 60 sessions a minute, in a namespace of its own (the suite's Redis is shared)."""
    limits = CreationLimits(60, burst, ttl_budget_seconds, namespace=f"test-{uuid.uuid4().hex}")
    return CreationBudget(session_redis, limits)


async def test_past_its_burst_a_client_waits_for_the_next_session(
    session_redis: GuardedRedis, direct_redis: DirectRedis
) -> None:
    creations = budget(session_redis, burst=2)
    await creations.take("10.0.0.1", 60)
    await creations.take("10.0.0.1", 60)
    with pytest.raises(SessionCreationLimited) as limited:
        await creations.take("10.0.0.1", 60)
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 1
    await creations.take("10.0.0.2", 60)  # the budget is per client
    assert direct_redis.ttl(creation_key(creations.limits.namespace, "10.0.0.1")) > 0  # it lives until refilled


async def test_the_ttl_budget_limits_long_sessions(session_redis: GuardedRedis) -> None:
    creations = budget(session_redis, ttl_budget_seconds=3600)
    await creations.take("10.0.0.1", 3000)
    with pytest.raises(SessionCreationLimited) as limited:
        await creations.take("10.0.0.1", 3000)
    assert limited.value.retry_after is not None and limited.value.retry_after > 1000  # 2400 s of TTL to refill
