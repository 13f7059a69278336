"""Every Redis call of the session parts: timed by name and outcome; any way Redis fails is the store's 503."""

from __future__ import annotations

import pytest
import redis

from app.services.core.breakers import AsyncBreaker
from app.services.core.errors import SessionStoreUnavailable
from app.services.core.redis_client import REDIS_FAILURES
from app.services.sessions.guarded import GuardedRedis


def guarded_redis(observed: list[tuple[str, str]], fail_max: int = 5) -> GuardedRedis:
    breaker = AsyncBreaker("redis", fail_max=fail_max, reset_seconds=60, failures=REDIS_FAILURES)
    # The client is never reached: each test passes the operation itself.
    client = redis.asyncio.Redis(host="127.0.0.1", port=1)
    return GuardedRedis(client, breaker, lambda name, outcome, _: observed.append((name, outcome)))


async def test_a_call_that_answers_is_observed_ok() -> None:
    observed: list[tuple[str, str]] = []

    async def answer() -> int:
        return 7

    assert await guarded_redis(observed).call("get", answer) == 7
    assert observed == [("get", "ok")]


async def test_a_redis_failure_and_an_open_breaker_are_both_503_with_retry_after() -> None:
    observed: list[tuple[str, str]] = []
    calls = guarded_redis(observed, fail_max=1)

    async def down() -> int:
        raise redis.ConnectionError("refused")

    for _ in range(2):  # the second is refused by the open breaker without calling Redis
        with pytest.raises(SessionStoreUnavailable) as raised:
            await calls.call("admit_frame", down)
        assert raised.value.retry_after == 1
    assert observed == [("admit_frame", "error"), ("admit_frame", "error")]
    assert calls.breaker.state == "open"
