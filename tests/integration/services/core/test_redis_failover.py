"""The one Redis client across a cluster failover: a master is killed, its replica takes over, and what ran on the
master runs on the replica (a real three-master cluster with a replica each)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.services.core.redis_client import create_redis, register_script
from app.settings import RedisSettings
from tests.support.redis_cluster import RedisCluster
from tests.support.waiting import wait_for

NODE_TIMEOUT_MS = 1000  # the replica takes over ~1-3 s after its master died


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path / "cluster", replicas=1, node_timeout_ms=NODE_TIMEOUT_MS)
    cluster.start()
    yield cluster
    cluster.kill()


async def test_a_script_runs_on_the_replica_that_took_over(replicated_cluster: RedisCluster) -> None:
    """The replica never saw the script (Redis replicates its effects, not the script): it answers NOSCRIPT, and
    the script must still run there, on the first call that reaches it and every one after. Calls made during the
    failover leave the client believing the new master a replica (its map from a node that had yet to see the
    failover): redis-py's own SCRIPT LOAD then skipped it, and every call failed NOSCRIPT for good."""
    key, master = key_off_the_seed(replicated_cluster)
    client = create_redis(RedisSettings(url=replicated_cluster.url, mode="cluster"))
    increment = register_script(client, "return redis.call('INCR', KEYS[1])")
    try:
        assert await increment(keys=[key]) == 1
        replicated_cluster.wait_replicated(master)  # else the takeover may rightly lose the write: replication is async
        replicated_cluster.kill_node(master)  # and calls go on meanwhile, as a service's do
        answers: list[int] = []

        async def runs() -> bool:
            try:
                answers.append(await increment(keys=[key]))
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
                return False  # the client has yet to learn the new master: the breaker's business, not this test's
            return True

        await wait_for(runs, "the script runs on the new master", within=20, every=0.05)
        assert answers[-1] >= 2  # the replica had the key (written before the kill) and the script ran on it
        assert master not in replicated_cluster.masters()
        assert [await increment(keys=[key]) for _ in range(3)] == [answers[-1] + 1, answers[-1] + 2, answers[-1] + 3]
    finally:
        await client.aclose()


def key_off_the_seed(cluster: RedisCluster) -> tuple[str, int]:
    """A key and the node of its master, which is not REDIS_URL's seed node: the client re-discovers the cluster
    from the seed only (a name that resolves to live nodes, in production)."""
    with cluster.client() as seed:
        for number in range(100):
            key = f"session:{{failover-{number}}}"
            master = cluster.ports.index(int(seed.get_node_from_key(key).port))
            if master != 0:
                return key, master
    raise AssertionError("every key on the seed node")
