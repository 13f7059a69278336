"""The one Redis client: short timeouts, no retries (the breaker decides), bounded connections callers wait for.

REDIS_MODE=standalone: redis.asyncio.Redis on a blocking pool. REDIS_MODE=cluster: redis.asyncio.RedisCluster,
REDIS_URL naming one seed node, wrapped so it fails and waits the way the standalone client does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ClusterError, MaxConnectionsError, RedisClusterException, SlotNotCoveredError
from redis.typing import EncodableT

from app.settings import Settings
from app.types import RedisClient


class ClusterUnreachable(redis.ConnectionError):
    """Cluster discovery failed: no seed node answered CLUSTER SLOTS, or the slots they know are not all covered."""


# Only these mean "Redis cannot serve us now" (down, unreachable, a read-only replica after failover, out of
# memory; on a cluster also CLUSTERDOWN/MASTERDOWN or redirects that never settle (ClusterError), a hole in the
# client's slot map, ClusterUnreachable); anything else is a bug or bad data and must not trip a breaker.
# MaxConnectionsError is a ConnectionError: it only happens when no connection frees up within the timeout.
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    redis.OutOfMemoryError,
    ClusterError,
    SlotNotCoveredError,
    OSError,
)

# Set while a task holds a permit of the cluster client: a pipeline's redirected commands run inside it.
_HOLDS_PERMIT: ContextVar[bool] = ContextVar("redis_cluster_permit", default=False)


def create_redis(settings: Settings) -> RedisClient:
    timeout = settings.redis_socket_timeout_seconds
    if settings.redis_mode == "cluster":
        return BoundedRedisCluster.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            pool_timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            # Re-discovery always asks the seed from REDIS_URL: a name that resolves to any live node keeps
            # working after every node has been replaced, which the node addresses learnt last time would not.
            dynamic_startup_nodes=False,
            decode_responses=True,
        )
    # A plain ConnectionPool raises MaxConnectionsError (a ConnectionError) when exhausted, which would trip
    # the breaker under load; the blocking pool queues for a free connection instead.
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    return redis.Redis(connection_pool=pool)


class BoundedRedisCluster(redis.RedisCluster):
    """RedisCluster that behaves like the standalone client on its blocking pool.

    redis-py's cluster client raises MaxConnectionsError as soon as a node's `max_connections` are in use, which
    would trip the breaker under load: here at most `max_connections` calls run at once (each holds at most one
    connection per node), the others wait up to `pool_timeout`. Discovery failures, which redis-py raises as a
    bare RedisClusterException, become ClusterUnreachable.
    """

    def __init__(self, *, max_connections: int, pool_timeout: float, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._permits = asyncio.Semaphore(max_connections)
        self._pool_timeout = pool_timeout
        self._in_flight = 0
        self._maybe_stranded = False

    async def initialize(self) -> BoundedRedisCluster:
        try:
            await super().initialize()
        except RedisClusterException as exc:
            raise ClusterUnreachable(str(exc)) from exc
        return self

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        async with self.permit():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        # A transaction works (keys of one slot only), but redis-py queues each of its commands from a thread and
        # event loop of its own, blocking this loop ~0.4 ms a command: a Lua script is the cheap atomic tool.
        if shard_hint:
            raise ValueError("shard_hint is not supported in cluster mode")
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]  # only redis-py's annotations say so

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        """One of the `max_connections` call slots, waited for up to `pool_timeout`; re-entrant within a task."""
        if _HOLDS_PERMIT.get():
            yield
            return
        try:
            async with asyncio.timeout(self._pool_timeout):
                await self._permits.acquire()
        except TimeoutError:
            raise MaxConnectionsError("No connection available.") from None
        token = _HOLDS_PERMIT.set(True)
        self._in_flight += 1
        try:
            yield
        except BaseException:
            self._maybe_stranded = True
            raise
        finally:
            self._in_flight -= 1
            _HOLDS_PERMIT.reset(token)
            self._permits.release()
            if self._maybe_stranded and self._in_flight == 0:
                self._reclaim_stranded()

    def _reclaim_stranded(self) -> None:
        """Forget connections that failed calls left checked out.

        redis-py 7 does not return a node's connection to its free list when sending on it fails (fixed in 8:
        redis/redis-py#4110), so every failed call during an outage would use up one of `max_connections` for
        good, and after the outage the node would refuse every call. Run only when no call is in flight: then
        every connection still in use is a stranded one (already disconnected by the failure).
        """
        self._maybe_stranded = False
        manager = self.nodes_manager
        for node in (*manager.nodes_cache.values(), *manager.startup_nodes.values()):
            free = {id(connection) for connection in node._free}
            node._connections = [connection for connection in node._connections if id(connection) in free]


class _BoundedPipeline(ClusterPipeline):
    """A cluster pipeline that holds one permit of its client while it runs."""

    def __init__(self, client: BoundedRedisCluster, transaction: Any | None) -> None:
        super().__init__(client, transaction)
        self._bounded_client = client

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        async with self._bounded_client.permit():
            return await super().execute(raise_on_error, allow_redirections)


def register_script(client: RedisClient, script: str) -> AsyncScript:
    # AsyncScript serves both clients (it takes the cluster client's encoder); its annotation names only Redis.
    return AsyncScript(cast(redis.Redis, client), script)


def redact_url(url: str) -> str:
    """Drop credentials from a URL before it is logged."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"  # the last @ ends the credentials
