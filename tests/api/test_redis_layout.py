"""What the service really writes to Redis: one hash slot per session, nothing outside a session's keys, nothing
left once it expires, and no write at all when /metrics is scraped. On one Redis and on a Redis Cluster."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

import pytest
import redis
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError

from app.services.core.redis_client import create_redis
from app.services.sessions.admission import creation_key
from app.services.sessions.keys import session_key
from app.settings import Settings
from tests.conftest import DirectRedis, RedisTarget, RunningApp, both_redis_backends, node_clients
from tests.support.images import scene_with_hazards
from tests.support.redis_cluster import RedisCluster
from tests.support.waiting import wait_for

pytestmark = both_redis_backends
SCENE, FRAME = scene_with_hazards(seed=3, size=(1280, 720))


def all_keys(redis_target: RedisTarget) -> set[str]:
    keys: set[str] = set()
    for node in node_clients(redis_target):
        with node:
            keys.update(str(key) for key in node.scan_iter("*"))
    return keys


def info(node: redis.Redis, section: str) -> dict[str, Any]:
    return cast(dict[str, Any], node.info(section))


def flush(redis_target: RedisTarget) -> None:
    """The suite's Redis is shared: these tests look at the whole keyspace, so they start from an empty one."""
    for node in node_clients(redis_target):
        with node:
            node.flushall()


async def start_quiet_app(start_app: Any, settings: Settings) -> RunningApp:
    """The app with its fleet agent stopped: its heartbeats write the fleet's own keys on a clock of their own,
    which would blur a check of what the session store and the scrape write."""
    api: RunningApp = await start_app(settings)
    await api.app.state.parts.fleet.agent.stop()
    return api


async def test_a_session_writes_only_its_own_keys_in_one_slot_and_leaves_nothing_behind(
    start_app: Any, make_settings: Callable[..., Settings], redis_target: RedisTarget, direct_redis: DirectRedis
) -> None:
    # One frame confirms a hazard (track_min_hits=1), so it is uploaded and every kind of session key is written.
    settings = make_settings(upload_min_confidence=0.3, session_ended_grace_seconds=1, track_min_hits=1)
    api = await start_quiet_app(start_app, settings)
    flush(redis_target)
    session_id = await api.new_session(metadata={"vehicle": "van-7"})
    detected = await api.client.post(f"/detect/{session_id}", content=FRAME, headers={"content-type": "image/jpeg"})
    assert detected.status_code == 200 and detected.json()["detections"], detected.text
    request_id = detected.json()["request_id"]

    async def uploaded() -> bool:
        history = (await api.client.get(f"/sessions/{session_id}/detections")).json()
        return any(
            item["request_id"] == request_id and item["upload"]["status"] == "uploaded" for item in history["items"]
        )

    await wait_for(uploaded, "the annotated frame's URL recorded")
    assert (await api.client.post(f"/sessions/{session_id}/end")).status_code == 200
    await api.client.get("/metrics")  # the scrape's scan must leave no key either

    base = session_key(session_id)
    assert base == f"session:{{{session_id}}}"  # literal braces: Redis Cluster hashes only the id
    # The client's creation budget is the client's, not the session's: its own key, on its own clock.
    creation = creation_key(settings.fleet.name, "127.0.0.1")
    assert 0 < direct_redis.pttl(creation) <= 3_600_000
    direct_redis.delete(creation)
    keys = all_keys(redis_target)
    assert keys == {base, f"{base}:history", f"{base}:uploads", f"{base}:tracks", f"{base}:hazards"}
    assert {key_slot(key.encode()) for key in keys} == {key_slot(session_id.encode())}
    if isinstance(redis_target, RedisCluster):  # the server agrees with the client's slot arithmetic
        server_slots = {
            cast(int, node.cluster("KEYSLOT", key)) for node in node_clients(redis_target)[:1] for key in keys
        }
        assert server_slots == {key_slot(session_id.encode())}
    ttls = [direct_redis.pttl(key) for key in sorted(keys)]
    assert all(0 < ttl <= 1000 for ttl in ttls), ttls  # every key expires with the ended session

    async def nothing_left() -> bool:
        return not all_keys(redis_target)

    await wait_for(nothing_left, "every key of the expired session gone", within=5.0)


async def test_scraping_metrics_writes_nothing_to_redis(
    start_app: Any, make_settings: Callable[..., Settings], redis_target: RedisTarget
) -> None:
    api = await start_quiet_app(start_app, make_settings())
    flush(redis_target)
    ended = await api.new_session()
    await api.client.post(f"/sessions/{ended}/end")
    await api.new_session()
    nodes = node_clients(redis_target)
    changes_before = [info(node, "persistence")["rdb_changes_since_last_save"] for node in nodes]
    for node in nodes:
        node.config_resetstat()

    scrape = await api.client.get("/metrics")

    assert scrape.status_code == 200
    called = {name.removeprefix("cmdstat_") for node in nodes for name in info(node, "commandstats")}
    described: dict[str, dict[str, Any]] = nodes[0].execute_command("COMMAND", "INFO", *called)  # type: ignore[no-untyped-call]
    flags = {name: set(command["flags"]) for name, command in described.items()}
    writes = {name for name, command_flags in flags.items() if command_flags & {"write", "may_replicate"}}
    assert not writes, f"the scrape ran {writes}"
    assert "scan" in called  # it did read Redis: the gauge is counted, not remembered
    assert [info(node, "persistence")["rdb_changes_since_last_save"] for node in nodes] == changes_before
    gauge = next(
        family for family in text_string_to_metric_families(scrape.text) if family.name == "hazard_active_sessions"
    )
    assert gauge.samples[0].value == 1  # the ended session is not counted


async def test_the_client_runs_a_transaction_over_keys_of_one_slot_in_this_event_loop(
    make_settings: Callable[..., Settings], direct_redis: DirectRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads_started = []
    monkeypatch.setattr(threading.Thread, "start", lambda thread: threads_started.append(thread))
    client = create_redis(make_settings().redis)
    key, other = "test:{transaction}", "test:{transaction}:other"
    try:
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"field": "1"})
            pipe.expire(key, 60)
            pipe.set(other, "2", ex=60)
            assert await pipe.execute() == [1, True, True]
        if isinstance(client, redis.asyncio.RedisCluster):
            async with client.pipeline(transaction=True) as pipe:
                pipe.set("test:{one-slot}", "1")
                pipe.set("test:{another-slot}", "1")
                with pytest.raises(ClusterCrossSlotError):
                    await pipe.execute()
    finally:
        await client.aclose()
    assert not threads_started  # redis-py's own cluster transaction starts a thread per queued command
    assert direct_redis.hget(key, "field") == "1" and 0 < direct_redis.ttl(key) <= 60
    assert direct_redis.get(other) == "2"
    assert direct_redis.exists("test:{one-slot}") == 0
    direct_redis.delete(key)
    direct_redis.delete(other)
