"""Operator accounts against a real Redis, standalone and cluster: login, roles, disabling, what is stored."""

from __future__ import annotations

import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from app.services.core.errors import (
    ApiError,
    OperatorAccountExists,
    OperatorAccountNotFound,
    Unauthorized,
)
from app.services.identity.accounts import OperatorAccounts, Role
from tests.conftest import DirectRedis, both_redis_backends
from tests.integration.services.identity.conftest import IdentityRedis

pytestmark = both_redis_backends
PASSWORD = "correct horse battery"
# argon2 at its cheapest: the suite checks the flow, not the cost (production uses PasswordHash.recommended()).
CHEAP_HASH = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))


def accounts(identity: IdentityRedis) -> OperatorAccounts:
    return OperatorAccounts(identity.new_client(), namespace=identity.namespace, hasher=CHEAP_HASH)


async def refused_login(store: OperatorAccounts, name: str, password: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as raised:
        await store.verify_login(name, password)
    return raised.value


async def test_the_right_password_logs_in_and_every_wrong_login_fails_alike(identity_redis: IdentityRedis) -> None:
    store = accounts(identity_redis)
    await store.create("Alice", PASSWORD, Role.INSPECTOR)
    await store.create("bob", PASSWORD, Role.VIEWER)
    await store.disable("bob")
    account = await store.verify_login("alice", PASSWORD)
    assert (account.name, account.role, account.active) == ("alice", Role.INSPECTOR, True)
    assert account.last_login_at is not None and (await store.get("alice")).last_login_at == account.last_login_at
    failures = [
        await refused_login(store, "alice", PASSWORD + "!"),
        await refused_login(store, "nobody", PASSWORD),
        await refused_login(store, "bob", PASSWORD),  # disabled
        await refused_login(store, "{bad name}", PASSWORD),
        await refused_login(store, "alice", "x" * 5000),
    ]
    assert {(f.code, f.status, f.message) for f in failures} == {("UNAUTHORIZED", 401, "Wrong user name or password.")}


async def test_the_password_is_stored_only_as_an_argon2_hash(
    identity_redis: IdentityRedis, direct_redis: DirectRedis
) -> None:
    await accounts(identity_redis).create("carol", PASSWORD, Role.ADMIN)
    stored = direct_redis.hgetall(f"{{{identity_redis.namespace}:operators}}:account:carol")
    assert stored["password_hash"].startswith("$argon2id$")
    assert all(PASSWORD not in value for value in stored.values())


async def test_a_role_changes_and_accounts_list_by_name(identity_redis: IdentityRedis) -> None:
    store = accounts(identity_redis)
    for name in ("zoe", "dan"):
        await store.create(name, PASSWORD, Role.VIEWER)
    promoted = await store.set_role("zoe", Role.ADMIN)
    assert promoted.role is Role.ADMIN
    assert [(a.name, a.role) for a in await store.list_accounts()] == [("dan", Role.VIEWER), ("zoe", Role.ADMIN)]
    assert (await store.verify_login("zoe", PASSWORD)).role is Role.ADMIN


async def test_a_name_is_taken_once_and_unknown_accounts_are_404(identity_redis: IdentityRedis) -> None:
    store = accounts(identity_redis)
    await store.create("erin", PASSWORD, Role.VIEWER)
    with pytest.raises(OperatorAccountExists):
        await store.create("ERIN", PASSWORD, Role.ADMIN)
    for attempt in (store.get("frank"), store.disable("frank"), store.set_role("frank", Role.ADMIN)):
        with pytest.raises(OperatorAccountNotFound):
            await attempt
    assert [a.name for a in await store.list_accounts()] == ["erin"]  # nothing made by the failed calls


@pytest.mark.parametrize(
    ("name", "password"), [("admin", PASSWORD), ("has space", PASSWORD), ("x" * 65, PASSWORD), ("gina", "short")]
)
async def test_reserved_or_malformed_names_and_short_passwords_are_refused(
    identity_redis: IdentityRedis, name: str, password: str
) -> None:
    with pytest.raises(ApiError) as raised:
        await accounts(identity_redis).create(name, password, Role.VIEWER)
    assert raised.value.status == 422
