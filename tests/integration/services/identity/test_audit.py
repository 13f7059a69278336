"""The audit log against a real Redis, standalone and cluster: newest first, capped, no keys in it."""

from __future__ import annotations

from app.services.identity.audit import AuditLog
from app.services.identity.key_format import format_key, new_secret
from tests.conftest import both_redis_backends
from tests.integration.services.identity.conftest import IdentityRedis

pytestmark = both_redis_backends


async def test_entries_come_back_newest_first_with_who_what_and_when(identity_redis: IdentityRedis) -> None:
    times = iter([100.0, 101.0, 102.0])
    log = AuditLog(identity_redis.new_client(), namespace=identity_redis.namespace, clock=lambda: next(times))
    await log.record("alice", "api_key.created", "key:abcd1234", {"tenant": "fleet-a"})
    await log.record("alice", "api_key.revoked", "key:abcd1234")
    await log.record("bob", "model.activated", "model:v7", {"previous": "v6"})
    latest = await log.latest(2)
    assert [(e.actor, e.action, e.target, e.at) for e in latest] == [
        ("bob", "model.activated", "model:v7", 102.0),
        ("alice", "api_key.revoked", "key:abcd1234", 101.0),
    ]
    assert latest[0].details == {"previous": "v6"}
    assert [e.action for e in await log.latest()][-1] == "api_key.created"


async def test_the_log_keeps_only_its_newest_entries(identity_redis: IdentityRedis) -> None:
    log = AuditLog(identity_redis.new_client(), namespace=identity_redis.namespace, max_entries=3)
    for n in range(5):
        await log.record("alice", "hazard.verdict", f"hazard:{n}")
    assert [e.target for e in await log.latest(10)] == ["hazard:4", "hazard:3", "hazard:2"]


async def test_a_key_written_into_an_entry_is_cut_to_its_public_id(identity_redis: IdentityRedis) -> None:
    log = AuditLog(identity_redis.new_client(), namespace=identity_redis.namespace)
    secret = new_secret()
    key = format_key("abcd1234", secret)
    await log.record("alice", "api_key.created", key, {"note": f"handed {key} to the driver"})
    (entry,) = await log.latest(1)
    assert secret not in repr(entry)
    assert entry.target == "hzk_abcd1234_***" and entry.details == {"note": "handed hzk_abcd1234_*** to the driver"}
