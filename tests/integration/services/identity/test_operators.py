"""OperatorAuth (app/services/identity/operators.py) against a real Redis: where the operator's secret comes from,
passwords and tokens checked, and failed attempts throttled per client address for a window."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pwdlib import PasswordHash
from redis.asyncio import Redis
from structlog.testing import capture_logs

from app.services.core.errors import AdminDisabled, TooManyLoginAttempts, Unauthorized
from app.services.identity.operators import ADMIN_USER, Credentials, OperatorAuth
from tests.support.redis_process import RedisProcess

PASSWORD = "correct horse battery staple"
TOKEN = "machine-token-0123456789"
MAX_FAILURES = 3
WINDOW_SECONDS = 1

MakeAuth = Callable[..., OperatorAuth]


@pytest.fixture
async def redis_client(redis_server: RedisProcess) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def make_auth(redis_client: Redis) -> MakeAuth:
    """An OperatorAuth of a deployment of its own (no test sees another's failure counts)."""

    def build(**overrides: Any) -> OperatorAuth:
        options: dict[str, Any] = {
            "namespace": f"test-{uuid.uuid4().hex[:8]}",
            "environment": "test",
            "password_hash": PasswordHash.recommended().hash(PASSWORD),
            "password": None,
            "token": TOKEN,
            "max_failures": MAX_FAILURES,
            "window_seconds": WINDOW_SECONDS,
            **overrides,
        }
        return OperatorAuth(redis_client, **options)

    return build


async def test_the_password_of_the_hash_and_the_token_are_accepted(make_auth: MakeAuth) -> None:
    auth = make_auth()
    await auth.authenticate(Credentials(password=PASSWORD), "192.0.2.1")
    await auth.authenticate(Credentials(token=TOKEN), "192.0.2.1")
    await auth.check_login(ADMIN_USER, PASSWORD, "192.0.2.1")


async def test_a_wrong_password_token_or_user_name_is_refused(make_auth: MakeAuth) -> None:
    auth = make_auth(max_failures=100)
    for credentials in (Credentials(password="wrong"), Credentials(token="wrong"), Credentials()):
        with pytest.raises(Unauthorized):
            await auth.authenticate(credentials, "192.0.2.2")
    with pytest.raises(Unauthorized):
        await auth.check_login("root", PASSWORD, "192.0.2.2")  # the right password under another name
    with pytest.raises(Unauthorized):
        await auth.check_login(ADMIN_USER, "wrong", "192.0.2.2")


async def test_failures_past_the_limit_are_throttled_per_address_until_the_window_ends(make_auth: MakeAuth) -> None:
    auth = make_auth()
    with capture_logs() as logs:
        for _ in range(MAX_FAILURES):
            with pytest.raises(Unauthorized):
                await auth.authenticate(Credentials(password="guess"), "192.0.2.3")
    assert [entry["client"] for entry in logs if entry["event"] == "admin_auth_failed"] == ["192.0.2.3"] * 3

    # Past the limit even the right password is refused, with when to come back; other addresses are not.
    with pytest.raises(TooManyLoginAttempts) as refused:
        await auth.authenticate(Credentials(password=PASSWORD), "192.0.2.3")
    assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= WINDOW_SECONDS
    with pytest.raises(TooManyLoginAttempts):
        await auth.check_login(ADMIN_USER, PASSWORD, "192.0.2.3")
    await auth.authenticate(Credentials(password=PASSWORD), "192.0.2.4")

    deadline = time.monotonic() + WINDOW_SECONDS + 5
    while True:  # the window is Redis' TTL: poll (bounded) until it has passed
        try:
            await auth.authenticate(Credentials(password=PASSWORD), "192.0.2.3")
            break
        except TooManyLoginAttempts:
            assert time.monotonic() < deadline, "still throttled after the window"
            await asyncio.sleep(0.05)


async def test_presenting_nothing_is_not_counted_as_a_guess(make_auth: MakeAuth) -> None:
    auth = make_auth()
    for _ in range(MAX_FAILURES + 1):
        with pytest.raises(Unauthorized):
            await auth.authenticate(Credentials(), "192.0.2.5")
    await auth.authenticate(Credentials(password=PASSWORD), "192.0.2.5")


async def test_a_plain_password_is_hashed_outside_production_and_refused_in_it(make_auth: MakeAuth) -> None:
    development = make_auth(password_hash=None, password="plain-secret")
    await development.authenticate(Credentials(password="plain-secret"), "192.0.2.6")

    production = make_auth(environment="production", password_hash=None, password="plain-secret")
    assert not production.enabled and production.disabled_reason
    with pytest.raises(AdminDisabled):
        await production.authenticate(Credentials(password="plain-secret"), "192.0.2.6")
    with pytest.raises(AdminDisabled):
        await production.check_login(ADMIN_USER, "plain-secret", "192.0.2.6")


async def test_with_no_secret_outside_production_a_generated_password_is_logged_once(make_auth: MakeAuth) -> None:
    with capture_logs() as logs:
        auth = make_auth(password_hash=None, password=None)
    (generated,) = [entry["password"] for entry in logs if entry["event"] == "admin_password_generated"]
    await auth.authenticate(Credentials(password=generated), "192.0.2.7")
    with pytest.raises(Unauthorized):
        await auth.authenticate(Credentials(password=PASSWORD), "192.0.2.7")
