"""Named operator accounts with roles, so the control center and the audit log say who did what.

`{<namespace>:operators}` is the hash tag: `...:account:<name>` (hash: role, argon2 hash, times) and `...:names`
(set). Passwords are chosen by people, so here the slow hash is the point (unlike API keys); it runs on a
thread. The single generated local password (`operators.OperatorAuth`, user `admin`) stays as it is, so that
name is reserved.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import structlog
from pwdlib import PasswordHash

from app.services.core.errors import OperatorAccountExists, OperatorAccountNotFound, Unauthorized, ValidationFailed
from app.services.core.redis_client import register_script
from app.services.core.types import RedisClient
from app.services.identity.redis_io import float_text, guarded, optional_float
from app.services.identity.roles import ADMIN_USER
from app.services.identity.roles import Role as Role  # re-exported: callers name roles from here too

log = structlog.get_logger(__name__)

ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024  # argon2 hashes whatever it is given: a megabyte "password" is a CPU attack

# KEYS: account, names set. ARGV[1] = name, then field/value pairs. 0 when the name is taken.
CREATE_ACCOUNT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: account. ARGV: field/value pairs. 0 when there is no such account (never creates one).
UPDATE_ACCOUNT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


@dataclass(frozen=True)
class OperatorAccount:
    name: str
    role: Role
    created_at: float
    disabled_at: float | None = None
    last_login_at: float | None = None

    @property
    def active(self) -> bool:
        return self.disabled_at is None


def require_account_name(name: str) -> str:
    name = name.strip().lower()
    if not ACCOUNT_NAME.fullmatch(name):
        raise ValidationFailed(
            "An operator name is 1-64 lowercase letters, digits, '.', '_', '@' or '-'.", details={"field": "name"}
        )
    if name == ADMIN_USER:
        raise ValidationFailed(f"'{ADMIN_USER}' is the built-in operator's name.", details={"field": "name"})
    return name


def require_password(password: str) -> str:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise ValidationFailed(
            f"A password is {MIN_PASSWORD_CHARS}-{MAX_PASSWORD_CHARS} characters.", details={"field": "password"}
        )
    return password


def require_role(role: str) -> Role:
    if role not in {r.value for r in Role}:
        raise ValidationFailed("Unknown role.", details={"field": "role", "allowed": [r.value for r in Role]})
    return Role(role)


def _account_from_fields(fields: dict[str, str]) -> OperatorAccount:
    return OperatorAccount(
        name=fields["name"],
        role=Role(fields["role"]),
        created_at=float(fields["created_at"]),
        disabled_at=optional_float(fields.get("disabled_at")),
        last_login_at=optional_float(fields.get("last_login_at")),
    )


class OperatorAccounts:
    def __init__(
        self,
        redis: RedisClient,
        *,
        namespace: str,
        hasher: PasswordHash | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._tag = f"{{{namespace}:operators}}"
        self._hasher = hasher or PasswordHash.recommended()
        self._clock = clock
        self._dummy_hash: str | None = None  # verified against for unknown names, so they cost what a real one does
        self._create_script = register_script(redis, CREATE_ACCOUNT)
        self._update_script = register_script(redis, UPDATE_ACCOUNT)

    def _account_key(self, name: str) -> str:
        return f"{self._tag}:account:{name}"

    async def create(self, name: str, password: str, role: Role) -> OperatorAccount:
        name = require_account_name(name)
        password_hash = await asyncio.to_thread(self._hasher.hash, require_password(password))
        account = OperatorAccount(name=name, role=require_role(role), created_at=self._clock())
        fields = {"name": name, "role": account.role.value, "created_at": float_text(account.created_at)}
        fields |= {"password_hash": password_hash, "disabled_at": "", "last_login_at": ""}
        args = [name, *(part for pair in fields.items() for part in pair)]
        keys = [self._account_key(name), f"{self._tag}:names"]
        if not await guarded(self._create_script(keys=keys, args=args)):
            raise OperatorAccountExists(details={"name": name})
        log.info("operator_account_created", operator=name, role=account.role.value)
        return account

    async def verify_login(self, name: str, password: str) -> OperatorAccount:
        """The account, or 401 with one message for an unknown name, a wrong password and a disabled account;
        argon2 runs in every case, so the time taken tells them apart no better than the answer does."""
        name = name.strip().lower()
        fields: dict[str, str] = {}
        if ACCOUNT_NAME.fullmatch(name) and len(password) <= MAX_PASSWORD_CHARS:
            fields = await guarded(cast(Any, self._redis.hgetall(self._account_key(name))))
        stored_hash = fields.get("password_hash") or await self._unknown_name_hash()
        password_ok = await asyncio.to_thread(self._hasher.verify, password[:MAX_PASSWORD_CHARS], stored_hash)
        if not fields or not password_ok or fields.get("disabled_at"):
            raise Unauthorized("Wrong user name or password.")
        now = self._clock()
        await guarded(self._update_script(keys=[self._account_key(name)], args=["last_login_at", float_text(now)]))
        account = _account_from_fields(fields)
        return OperatorAccount(account.name, account.role, account.created_at, None, now)

    async def _unknown_name_hash(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self._hasher.hash, "no account has this password")
        return self._dummy_hash

    async def get(self, name: str) -> OperatorAccount:
        name = name.strip().lower()
        fields = (
            await guarded(cast(Any, self._redis.hgetall(self._account_key(name))))
            if ACCOUNT_NAME.fullmatch(name)
            else {}
        )
        if not fields:
            raise OperatorAccountNotFound(details={"name": name})
        return _account_from_fields(fields)

    async def list_accounts(self) -> list[OperatorAccount]:
        """By name."""
        names = sorted(await guarded(cast(Any, self._redis.smembers(f"{self._tag}:names"))))
        if not names:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:  # one slot: one node on a cluster
            for name in names:
                pipe.hgetall(self._account_key(name))
            replies = await guarded(pipe.execute())
        return [_account_from_fields(fields) for fields in replies if fields]

    async def disable(self, name: str) -> OperatorAccount:
        """Refuses its next login; a control center session it holds ends with the session (not here)."""
        await self._update(name, {"disabled_at": float_text(self._clock())})
        log.info("operator_account_disabled", operator=name)
        return await self.get(name)

    async def enable(self, name: str) -> OperatorAccount:
        await self._update(name, {"disabled_at": ""})
        log.info("operator_account_enabled", operator=name)
        return await self.get(name)

    async def set_role(self, name: str, role: Role) -> OperatorAccount:
        await self._update(name, {"role": require_role(role).value})
        log.info("operator_role_changed", operator=name, role=role.value)
        return await self.get(name)

    async def _update(self, name: str, fields: dict[str, str]) -> None:
        name = name.strip().lower()
        args = [part for pair in fields.items() for part in pair]
        if not ACCOUNT_NAME.fullmatch(name) or not await guarded(
            self._update_script(keys=[self._account_key(name)], args=args)
        ):
            raise OperatorAccountNotFound(details={"name": name})
