"""The one Redis client: short timeouts, no retries (the breaker decides), a pool that waits instead of failing."""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.settings import Settings

# Only these mean "Redis cannot serve us now" (down, unreachable, a read-only replica after failover, out of
# memory); anything else is a bug or bad data and must not trip a breaker.
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    redis.OutOfMemoryError,
    OSError,
)


def create_redis(settings: Settings) -> redis.Redis:
    # A plain ConnectionPool raises MaxConnectionsError (a ConnectionError) when exhausted, which would trip
    # the breaker under load; the blocking pool queues for a free connection instead.
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_socket_timeout_seconds,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    return redis.Redis(connection_pool=pool)


def redact_url(url: str) -> str:
    """Drop credentials from a URL before it is logged."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"  # the last @ ends the credentials
