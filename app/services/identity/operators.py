"""Operator authentication: one check for the admin API (Basic or Bearer) and the control center's login form,
answering who the operator is (`Operator`: a name and a role).

The built-in operator `admin` has the admin role; named accounts (`accounts.OperatorAccounts`) log in with their
own name and password and have their own role.

Where the secret comes from, in order: `ADMIN_PASSWORD_HASH` (argon2, any environment); `ADMIN_PASSWORD`
(plain, refused in production); in local development or tests with neither, a random password generated at
start and logged once (like Jupyter's token). In production with neither, administration is disabled and
every admin route answers 503 ADMIN_DISABLED. `ADMIN_TOKEN` is the Bearer token for machine clients.
Failed attempts are counted per client address in Redis (in memory while Redis is down) and refused past
a limit with 429, so a password cannot be guessed at speed.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import cast

import structlog
from pwdlib import PasswordHash

from app.services.core.errors import AdminDisabled, OperatorAccountNotFound, TooManyLoginAttempts, Unauthorized
from app.services.core.redis_client import REDIS_FAILURES
from app.services.core.types import RedisClient
from app.services.identity.accounts import OperatorAccounts
from app.services.identity.roles import ADMIN_USER, BUILT_IN_OPERATOR, Operator

log = structlog.get_logger(__name__)

__all__ = ["ADMIN_USER", "Credentials", "Operator", "OperatorAuth"]

GENERATED_PASSWORD_BYTES = 18


@dataclass(frozen=True)
class Credentials:
    """What a request presented: a user name and password (Basic or the login form) or a Bearer token."""

    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    user: str = ADMIN_USER


class OperatorAuth:
    def __init__(
        self,
        redis: RedisClient,
        *,
        namespace: str,
        environment: str,
        password_hash: str | None,
        password: str | None,
        token: str | None,
        max_failures: int,
        window_seconds: int,
        accounts: OperatorAccounts | None = None,
    ) -> None:
        self._redis = redis
        self._accounts = accounts
        self._namespace = namespace
        self._hasher = PasswordHash.recommended()
        self._token = token or None
        self._max_failures = max_failures
        self._window = window_seconds
        self._local_failures: dict[str, tuple[int, float]] = {}
        self.disabled_reason: str | None = None
        self._hash = self._resolve_hash(environment, password_hash, password)

    def _resolve_hash(self, environment: str, password_hash: str | None, password: str | None) -> str | None:
        if password_hash:
            return password_hash
        if password and environment != "production":
            return self._hasher.hash(password)
        if environment == "production":
            self.disabled_reason = (
                "ADMIN_PASSWORD_HASH is not set (ADMIN_PASSWORD is refused in production): admin routes answer 503"
            )
            log.error("admin_disabled", reason=self.disabled_reason)
            return None
        generated = secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
        # Shown once so a developer can log in; set ADMIN_PASSWORD(_HASH) to choose one.
        log.warning("admin_password_generated", user=ADMIN_USER, password=generated)
        return self._hasher.hash(generated)

    def _failures_key(self, client: str) -> str:
        # One key per client, under the deployment's hash tag: one slot, and deployments never share counts.
        return f"auth:{{{self._namespace}}}:failures:{client}"

    @property
    def enabled(self) -> bool:
        return self._hash is not None

    async def authenticate(self, credentials: Credentials, client: str) -> Operator:
        """The operator the credentials name; 401, 429 or 503 otherwise."""
        if self._hash is None:
            raise AdminDisabled(details={"reason": self.disabled_reason})
        retry_after = await self._blocked_for(client)
        if retry_after is not None:
            raise TooManyLoginAttempts(retry_after=retry_after)
        if credentials.password is None and credentials.token is None:
            raise Unauthorized()  # nothing presented: not a guess, so not counted
        operator = await self._operator(credentials)
        if operator is not None:
            return operator
        await self._count_failure(client)
        raise Unauthorized("Wrong credentials.")

    async def check_login(self, user: str, password: str, client: str) -> Operator:
        """The control center's login form: like `authenticate`, but a wrong user name counts and answers exactly
        as a wrong password does (the password is verified either way, so timing tells nothing either)."""
        if self._hash is None:
            raise AdminDisabled(details={"reason": self.disabled_reason})
        retry_after = await self._blocked_for(client)
        if retry_after is not None:
            raise TooManyLoginAttempts(retry_after=retry_after)
        operator = await self._operator(Credentials(password=password, user=user))
        if operator is not None:
            return operator
        await self._count_failure(client)
        raise Unauthorized("Wrong user name or password.")

    async def current(self, name: str) -> Operator | None:
        """Who a signed-in operator is now: a named account's role may have changed, or it may be disabled."""
        if name == ADMIN_USER:
            return BUILT_IN_OPERATOR
        if self._accounts is None:
            return None
        try:
            account = await self._accounts.get(name)
        except OperatorAccountNotFound:
            return None
        return Operator(account.name, account.role) if account.active else None

    async def _operator(self, credentials: Credentials) -> Operator | None:
        """Exactly one argon2 run for any password, whoever it claims to be: timing names no account."""
        if credentials.token is not None:
            return BUILT_IN_OPERATOR if await self._valid(credentials) else None
        user = credentials.user.strip().lower()
        if user == ADMIN_USER or self._accounts is None or credentials.password is None:
            valid = await self._valid(credentials)
            return BUILT_IN_OPERATOR if valid and hmac.compare_digest(user.encode(), ADMIN_USER.encode()) else None
        try:
            account = await self._accounts.verify_login(user, credentials.password)
        except Unauthorized:
            return None
        return Operator(account.name, account.role)

    async def _valid(self, credentials: Credentials) -> bool:
        if credentials.token is not None and self._token is not None:
            return hmac.compare_digest(credentials.token.encode(), self._token.encode())
        if credentials.password is None or self._hash is None:
            return False
        # argon2 costs tens of milliseconds of CPU by design: off the event loop.
        return await asyncio.to_thread(self._hasher.verify, credentials.password, self._hash)

    async def _blocked_for(self, client: str) -> float | None:
        try:
            count, ttl = await self._redis_count(client)
        except REDIS_FAILURES:
            count, ttl = self._local_count(client)
        return float(max(ttl, 1)) if count >= self._max_failures else None

    async def _redis_count(self, client: str) -> tuple[int, int]:
        key = self._failures_key(client)
        count = await cast(Awaitable[str | None], self._redis.get(key))
        return (int(count), int(await self._redis.ttl(key))) if count else (0, 0)

    def _local_count(self, client: str) -> tuple[int, int]:
        count, until = self._local_failures.get(client, (0, 0.0))
        left = until - time.monotonic()
        return (count, int(left)) if left > 0 else (0, 0)

    async def _count_failure(self, client: str) -> None:
        log.warning("admin_auth_failed", client=client)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:  # one key: cluster-safe
                pipe.incr(self._failures_key(client))
                pipe.expire(self._failures_key(client), self._window, nx=True)
                await pipe.execute()
        except REDIS_FAILURES:
            count, _ = self._local_count(client)
            self._local_failures[client] = (count + 1, time.monotonic() + self._window)
