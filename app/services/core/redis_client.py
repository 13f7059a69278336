"""The one Redis client: short timeouts, no retries (the breaker decides), bounded connections callers wait for.

REDIS_MODE=standalone: redis.asyncio.Redis on a blocking pool. REDIS_MODE=cluster: redis.asyncio.RedisCluster,
REDIS_URL naming one seed node, wrapped so it fails and waits the way the standalone client does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextvars import ContextVar
from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterPipeline, PipelineCommand
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterError,
    ExecAbortError,
    MaxConnectionsError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
)
from redis.typing import EncodableT, KeyT

from app.services.core.types import RedisClient
from app.settings import RedisSettings


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

# What trips the Redis breaker: the failures above except an OOM refusal (`noeviction` at maxmemory). That write is
# unavailable (degraded mode keeps it), but Redis answered and still serves reads: opening the shared breaker
# would refuse those too.
REDIS_BREAKER_FAILURES: tuple[type[BaseException], ...] = tuple(
    failure for failure in REDIS_FAILURES if failure is not redis.OutOfMemoryError
)

# Set while a task holds a permit of the cluster client: a pipeline's redirected commands run inside it.
_HOLDS_PERMIT: ContextVar[bool] = ContextVar("redis_cluster_permit", default=False)


def create_redis(settings: RedisSettings) -> RedisClient:
    timeout = settings.socket_timeout_seconds
    if settings.mode == "cluster":
        return BoundedRedisCluster.from_url(
            settings.url,
            max_connections=settings.max_connections,
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
        settings.url,
        max_connections=settings.max_connections,
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
    bare RedisClusterException, become ClusterUnreachable. A transaction (keys of one slot) is sent from this
    event loop: redis-py's own runs each queued command on a thread and event loop of its own, which touch this
    loop's connections from the other thread when the cluster has to be re-discovered.
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
        if shard_hint:
            raise ValueError("shard_hint is not supported in cluster mode")
        return _BoundedPipeline(self, bool(transaction))  # type: ignore[abstract]  # only redis-py's annotations say so

    async def run_transaction(self, commands: list[PipelineCommand], raise_on_error: bool) -> list[Any]:
        """MULTI, the commands, EXEC, on the node that serves the one slot all their keys share."""
        if not commands:
            return []
        if self._initialize:
            await self.initialize()
        slots = {await self._determine_slot(*command.args) for command in commands}
        if len(slots) != 1:
            raise ClusterCrossSlotError("all keys of a cluster transaction must map to one slot")
        node = self.nodes_manager.get_node_from_slot(slots.pop())
        connection = node.acquire_connection()
        try:
            await connection.send_packed_command(
                connection.pack_commands([("MULTI",), *(command.args for command in commands), ("EXEC",)])
            )
            await connection.read_response()
            queued: list[ResponseError] = []
            for _ in commands:
                try:
                    await connection.read_response()
                except ResponseError as exc:  # refused when queued (EXEC will abort): keep reading the replies
                    queued.append(exc)
            replies = await connection.read_response()
        except ExecAbortError:
            raise queued[0] if queued else ExecAbortError("transaction aborted") from None
        except BaseException as exc:
            await connection.disconnect()  # replies may be left unread on it
            if isinstance(exc, REDIS_FAILURES):
                self._initialize = True  # the node may be gone: re-discover before the next call
            if isinstance(exc, AskError):  # MOVED or ASK: the slot is being resharded
                self._initialize = True
                raise ClusterError(f"the transaction's slot moved: {exc}") from exc
            raise
        finally:
            node.release(connection)
        results = []
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, ResponseError):
                if raise_on_error:
                    raise reply
                results.append(reply)
                continue
            callback = self.response_callbacks.get(command.args[0])
            results.append(callback(reply, **command.kwargs) if callback else reply)
        return results

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
        except AttributeError as exc:
            self._maybe_stranded = True
            # After a failure on a node redis-py 7 disconnects its idle connections without taking them out of the
            # free list first: a call that picked one up meanwhile finds its stream gone (`None.writelines`).
            if "'NoneType' object has no attribute" not in str(exc):
                raise
            raise redis.ConnectionError("the connection was closed while in use") from exc
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
    """A cluster pipeline that holds one permit of its client while it runs. Commands are always queued by the
    plain strategy (in this event loop); a transaction is then sent by BoundedRedisCluster.run_transaction."""

    def __init__(self, client: BoundedRedisCluster, transaction: bool) -> None:
        super().__init__(client)
        self._bounded_client = client
        self._atomic = transaction

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        async with self._bounded_client.permit():
            if not self._atomic:
                return await super().execute(raise_on_error, allow_redirections)
            commands = list(self._execution_strategy._command_queue)  # type: ignore[attr-defined]
            await self.reset()  # type: ignore[no-untyped-call]
            return await self._bounded_client.run_transaction(commands, raise_on_error)


class SourceOnMissScript(AsyncScript):
    """A script that, when the node answers NOSCRIPT, is sent whole (EVAL) to the node that said so, which caches it.

    redis-py's own answer to NOSCRIPT is SCRIPT LOAD on the nodes the cluster client believes are masters, then
    EVALSHA again: after a failover it can still take the replica that took over for a replica, load the script
    everywhere but there, and fail the same way on every later call (seen in the rehearsal: every frame of a session
    on that node answered 500 until the API restarted). EVAL goes where the keys route, like EVALSHA."""

    async def __call__(
        self,
        keys: Sequence[KeyT] | None = None,
        args: Iterable[EncodableT] | None = None,
        client: redis.Redis | None = None,
    ) -> Any:
        target = self.registered_client if client is None else client
        if isinstance(target, redis.client.Pipeline):
            return await super().__call__(keys, args, client)  # a pipeline loads its scripts before it runs
        key_list = list(keys or [])
        try:
            return await cast(Awaitable[Any], target.evalsha(self.sha, len(key_list), *key_list, *(args or [])))
        except NoScriptError:
            source = cast(str, self.script)  # registered as text (register_script)
            return await cast(Awaitable[Any], target.eval(source, len(key_list), *key_list, *(args or [])))


def register_script(client: RedisClient, script: str) -> AsyncScript:
    # AsyncScript serves both clients (it takes the cluster client's encoder); its annotation names only Redis.
    return SourceOnMissScript(cast(redis.Redis, client), script)


def redact_url(url: str) -> str:
    """Drop credentials from a URL before it is logged."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"  # the last @ ends the credentials
