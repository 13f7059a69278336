"""The API key store against a real Redis, standalone and cluster: verification, its failures, what is stored,
throttled usage writes, and revocation seen by another replica."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any, cast

import pytest
import redis

from app.services.core.errors import ApiError, ApiKeyNotFound, InvalidApiKey
from app.services.identity.device_profile import DeviceProfile
from app.services.identity.key_format import format_key, new_secret, parse_key
from app.services.identity.keys import KeyStore
from app.services.identity.limits import KeyLimits
from app.services.identity.principal import Scope
from tests.conftest import DirectRedis, RedisTarget, both_redis_backends, node_clients
from tests.integration.services.identity.conftest import IdentityRedis
from tests.support.redis_cluster import RedisCluster

pytestmark = both_redis_backends
PEPPER = b"pepper-for-tests-only-32-bytes-long"
DETECT = frozenset({Scope.DETECT})


class Clock:
    """Wall-clock time the test moves (expiry, usage writes); the cache keeps real monotonic time."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def key_store(identity: IdentityRedis, **options: Any) -> KeyStore:
    return KeyStore(identity.new_client(), namespace=identity.namespace, pepper=PEPPER, **options)


async def refusal(store: KeyStore, presented: str) -> InvalidApiKey:
    with pytest.raises(InvalidApiKey) as raised:
        await store.verify(presented)
    return raised.value


async def test_a_created_key_verifies_to_its_tenant_scopes_limits_and_profile(identity_redis: IdentityRedis) -> None:
    store = key_store(identity_redis)
    profile = DeviceProfile(height_m=1.3, pitch_deg=5.0, hfov_deg=85.0)
    created = await store.create(
        name="van 12",
        tenant="fleet-a",
        scopes=frozenset({Scope.DETECT, Scope.MAP_READ}),
        limits=KeyLimits(frames_per_second=10.0),
        device_profile=profile,
    )
    assert created.key.startswith(f"hzk_{created.record.key_id}_") and created.key not in repr(created)
    principal = await store.verify(created.key)
    assert (principal.tenant, principal.key_id, principal.operator) == ("fleet-a", created.record.key_id, None)
    assert principal.scopes == {Scope.DETECT, Scope.MAP_READ}
    assert principal.limits == KeyLimits(frames_per_second=10.0) and principal.device_profile == profile
    stored = await store.get(created.record.key_id)
    assert stored == replace(created.record, last_used_at=stored.last_used_at) and stored.last_used_at is not None


async def test_wrong_secret_unknown_revoked_expired_and_malformed_keys_fail_alike(
    identity_redis: IdentityRedis,
) -> None:
    clock = Clock()
    store = key_store(identity_redis, clock=clock)
    good = await store.create(name="good", tenant="t", scopes=DETECT)
    revoked = await store.create(name="revoked", tenant="t", scopes=DETECT)
    expiring = await store.create(name="expiring", tenant="t", scopes=DETECT, expires_at=clock.now + 60)
    await store.revoke(revoked.record.key_id)
    await store.verify(expiring.key)  # usable until it expires ...
    clock.now += 60  # ... and not from then on
    presented = {
        "wrong secret": format_key(good.record.key_id, new_secret()),
        "unknown id": format_key("zzzz9999", new_secret()),
        "revoked": revoked.key,
        "expired": expiring.key,
        "malformed": good.key[:-1],
        "empty": "",
        "huge": "hzk_" + "x" * 100_000,
    }
    failures = {kind: await refusal(store, key) for kind, key in presented.items()}
    shapes = {(f.code, f.status, f.message, repr(f.details)) for f in failures.values()}
    assert shapes == {("INVALID_API_KEY", 401, "The API key is not valid.", "{}")}
    await store.verify(good.key)  # the right key still works after all of that


def commands_processed(target: RedisTarget) -> int:
    total = 0
    for node in node_clients(target):
        with node:
            total += int(cast(dict[str, Any], node.info("stats"))["total_commands_processed"])
    return total


async def test_every_kind_of_failure_costs_redis_the_same_work(
    identity_redis: IdentityRedis, redis_target: RedisTarget
) -> None:
    """A malformed key still computes its digest and looks up a record, so no kind of failure returns early.
    Caching is off here: a cached key id answers without Redis, which tells only that the (public) id exists."""
    store = key_store(identity_redis, cache_seconds=0, version_check_seconds=3600)
    good = await store.create(name="good", tenant="t", scopes=DETECT)
    revoked = await store.create(name="revoked", tenant="t", scopes=DETECT)
    await store.revoke(revoked.record.key_id)
    kinds = [format_key(good.record.key_id, new_secret()), format_key("zzzz9999", new_secret()), revoked.key, "junk"]
    await refusal(store, kinds[0])  # loads the script on the slot's node and reads the version once
    costs = []
    for presented in kinds:
        before = commands_processed(redis_target)
        await refusal(store, presented)
        costs.append(commands_processed(redis_target) - before)
    assert len(set(costs)) == 1 and costs[0] > len(node_clients(redis_target)), costs  # more than the INFOs


def stored_values(node: redis.Redis, key: str) -> list[str]:
    kind = node.type(key)
    if kind == "string":
        return [cast(str, node.get(key))]
    if kind == "hash":
        return [part for pair in cast(dict[str, str], node.hgetall(key)).items() for part in pair]
    if kind == "zset":
        return cast(list[str], node.zrange(key, 0, -1))
    if kind == "set":
        return list(cast(set[str], node.smembers(key)))
    raise AssertionError(f"unexpected {kind} at {key}")


async def test_the_secret_is_stored_nowhere_and_every_key_shares_one_slot(
    identity_redis: IdentityRedis, redis_target: RedisTarget
) -> None:
    store = key_store(identity_redis, last_used_every_seconds=0)
    created = await store.create(name="n", tenant="fleet-a", scopes=DETECT, limits=KeyLimits(jobs_in_flight=2))
    await store.verify(created.key)  # writes last_used_at
    await store.update(created.record.key_id, device_profile=DeviceProfile(height_m=1.2, pitch_deg=0, hfov_deg=70))
    await store.revoke(created.record.key_id)
    parsed = parse_key(created.key)
    assert parsed is not None
    written: dict[str, list[str]] = {}
    for node in node_clients(redis_target):
        with node:
            for key in node.scan_iter("*"):
                assert parsed.secret not in key
                if identity_redis.namespace in key:
                    written[key] = stored_values(node, key)
    assert written, "the store wrote nothing?"
    for key, values in written.items():
        assert all(parsed.secret not in value for value in values), key
    assert all(key.startswith(f"{{{identity_redis.namespace}:api-keys}}:") for key in written)
    if isinstance(redis_target, RedisCluster):
        with node_clients(redis_target)[0] as node:
            assert len({node.cluster("KEYSLOT", key) for key in written}) == 1


async def test_last_used_is_written_at_most_every_interval(
    identity_redis: IdentityRedis, direct_redis: DirectRedis
) -> None:
    clock = Clock()
    store = key_store(identity_redis, clock=clock, last_used_every_seconds=60)
    created = await store.create(name="n", tenant="t", scopes=DETECT)
    record_key = f"{{{identity_redis.namespace}:api-keys}}:key:{created.record.key_id}"
    assert direct_redis.hget(record_key, "last_used_at") == ""
    first = clock.now
    await store.verify(created.key)
    for _ in range(20):  # a burst of frames within the interval writes nothing more
        clock.now += 2.9
        await store.verify(created.key)
    assert float(direct_redis.hget(record_key, "last_used_at") or 0) == first
    clock.now = first + 60
    await store.verify(created.key)
    assert float(direct_redis.hget(record_key, "last_used_at") or 0) == first + 60
    other_replica = key_store(identity_redis, clock=clock, last_used_every_seconds=60)
    clock.now += 1
    await other_replica.verify(created.key)  # it reads the stored time: no write of its own yet
    assert float(direct_redis.hget(record_key, "last_used_at") or 0) == first + 60
    assert (await store.get(created.record.key_id)).last_used_at == first + 60


async def refused_within(store: KeyStore, key: str, seconds: float) -> float:
    """Seconds until `store` refuses `key`, polled; fails past `seconds`."""
    started = time.monotonic()
    while True:
        try:
            await store.verify(key)
        except InvalidApiKey:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"still accepted after {seconds} s"
        await asyncio.sleep(0.02)


async def test_a_key_revoked_on_one_replica_is_refused_by_another_within_two_seconds(
    identity_redis: IdentityRedis,
) -> None:
    replica_a, replica_b = key_store(identity_redis), key_store(identity_redis)
    created = await replica_a.create(name="leaked", tenant="t", scopes=DETECT)
    await replica_b.verify(created.key)  # now in B's cache, which alone would keep it for 5 s
    await replica_b.verify(created.key)
    await replica_a.revoke(created.record.key_id)
    await refusal(replica_a, created.key)  # at once where it was revoked
    assert await refused_within(replica_b, created.key, 2.0) < 2.0


async def test_new_limits_reach_another_replica_like_a_revocation(identity_redis: IdentityRedis) -> None:
    replica_a, replica_b = key_store(identity_redis), key_store(identity_redis)
    created = await replica_a.create(name="n", tenant="t", scopes=DETECT, limits=KeyLimits(frames_per_second=5.0))
    assert (await replica_b.verify(created.key)).limits.frames_per_second == 5.0
    await replica_a.update(created.record.key_id, limits=KeyLimits(frames_per_second=1.0))
    started = time.monotonic()
    while (await replica_b.verify(created.key)).limits.frames_per_second != 1.0:
        assert time.monotonic() - started < 2.0, "the old limits outlived 2 s"
        await asyncio.sleep(0.02)


async def test_keys_list_newest_first_by_tenant_or_all(identity_redis: IdentityRedis) -> None:
    clock = Clock()
    store = key_store(identity_redis, clock=clock)
    made = []
    for tenant in ("a", "b", "a"):
        clock.now += 1
        made.append((await store.create(name=f"key of {tenant}", tenant=tenant, scopes=DETECT)).record)
    assert await store.list_keys() == made[::-1]
    assert await store.list_keys("a") == [made[2], made[0]]
    assert await store.list_keys("nobody") == []


async def test_an_update_changes_only_what_it_names(identity_redis: IdentityRedis) -> None:
    store = key_store(identity_redis)
    profile = DeviceProfile(height_m=1.2, pitch_deg=3, hfov_deg=70)
    created = await store.create(name="n", tenant="t", scopes=DETECT, device_profile=profile)
    limited = await store.update(created.record.key_id, limits=KeyLimits(sessions_per_minute=2.0))
    assert limited.device_profile == profile and limited.limits == KeyLimits(sessions_per_minute=2.0)
    cleared = await store.update(created.record.key_id, device_profile=None)
    assert cleared.device_profile is None and cleared.limits == limited.limits


@pytest.mark.parametrize("key_id", ["zzzz9999", "../../x", "{other}", ""])
async def test_managing_a_key_that_does_not_exist_is_404(identity_redis: IdentityRedis, key_id: str) -> None:
    store = key_store(identity_redis)
    for attempt in (store.get(key_id), store.revoke(key_id), store.update(key_id, device_profile=None)):
        with pytest.raises(ApiKeyNotFound):
            await attempt


async def test_a_key_with_a_past_expiry_a_bad_tenant_no_scope_or_no_name_is_422(identity_redis: IdentityRedis) -> None:
    clock = Clock()
    store = key_store(identity_redis, clock=clock)
    refused: list[dict[str, Any]] = [
        {"expires_at": clock.now},
        {"tenant": "has space"},
        {"scopes": frozenset()},
        {"name": " "},
    ]
    for options in refused:
        arguments: dict[str, Any] = {"name": "n", "tenant": "t", "scopes": DETECT, **options}
        with pytest.raises(ApiError) as raised:
            await store.create(**arguments)
        assert raised.value.status == 422
