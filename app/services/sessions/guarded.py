"""Redis calls of the session store's parts: through the breaker, timed, and any way Redis can fail is a 503."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redis.commands.core import AsyncScript

from app.services.core.breakers import AsyncBreaker, BreakerOpen
from app.services.core.errors import ApiError, SessionStoreUnavailable
from app.services.core.redis_client import REDIS_FAILURES, register_script
from app.services.core.types import RedisClient, RedisObserver

STORE_FAILURES: tuple[type[BaseException], ...] = (*REDIS_FAILURES, BreakerOpen)

T = TypeVar("T")


async def guarded(
    breaker: AsyncBreaker,
    name: str,
    operation: Callable[[], Awaitable[T]],
    observe: RedisObserver | None,
    unavailable: type[ApiError] = SessionStoreUnavailable,
) -> T:
    """One Redis operation through the breaker, timed; any way Redis can fail becomes `unavailable` (503)."""
    started = time.perf_counter()
    outcome = "error"
    try:
        result = await breaker.call(operation)
        outcome = "ok"
        return result
    except STORE_FAILURES as exc:
        raise unavailable(details={"reason": type(exc).__name__}, retry_after=1) from exc
    finally:
        if observe is not None:
            observe(name, outcome, time.perf_counter() - started)


@dataclass(frozen=True)
class GuardedRedis:
    """The service's Redis client and its breaker, shared by every part of the session store; `observe` times each
    named call (the metrics' Redis latency)."""

    client: RedisClient
    breaker: AsyncBreaker
    observe: RedisObserver | None = None

    async def call(self, name: str, operation: Callable[[], Awaitable[T]]) -> T:
        return await guarded(self.breaker, name, operation, self.observe)

    def script(self, source: str) -> AsyncScript:
        return register_script(self.client, source)
