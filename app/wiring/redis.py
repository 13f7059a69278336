"""The service's one Redis client and the breaker every session and tracking call goes through."""

from __future__ import annotations

from dataclasses import dataclass

from app.services.core.breakers import AsyncBreaker
from app.services.core.redis_client import REDIS_BREAKER_FAILURES, create_redis
from app.services.core.types import RedisClient, RedisObserver
from app.services.observability.metrics import Metrics
from app.settings import Settings


@dataclass(frozen=True)
class RedisParts:
    client: RedisClient
    breaker: AsyncBreaker
    observe: RedisObserver  # each call's latency, by name and outcome


def build_redis(settings: Settings, metrics: Metrics) -> RedisParts:
    breaker = AsyncBreaker(
        "redis",
        fail_max=settings.breakers.fail_max,
        reset_seconds=settings.breakers.reset_seconds,
        failures=REDIS_BREAKER_FAILURES,  # an OOM refusal is Redis answering: reads it can serve go on
        on_change=metrics.set_breaker_state,
    )
    metrics.set_breaker_state("redis", "closed")

    def observe(name: str, outcome: str, seconds: float) -> None:
        metrics.redis_latency.labels(name, outcome).observe(seconds)

    return RedisParts(create_redis(settings.redis), breaker, observe)
