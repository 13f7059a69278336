"""API keys in Redis: made here, shown once, kept as an HMAC, verified on the hot path without argon2.

Keys (`{<namespace>:api-keys}` is the hash tag: one slot per deployment, so every script is cluster-safe):
`...:key:<id>` (hash: the record and the secret's digest), `...:ids` and `...:tenant:<tenant>` (sorted sets of ids
by creation time, for listing), `...:version` (a counter every revoke or update increments).

Each process caches key records for `cache_seconds` and reads the version at most every
`version_check_seconds`: when it has moved, the cache is dropped, so a revocation reaches every replica within
about that interval plus one round trip, while a busy key costs Redis one small GET per interval, not one
read per frame. Records are read together with the version (one script), so a record is never filed under a
version older than what it shows. The cache holds records, not verdicts: every request's secret is still
compared (HMAC, constant time) against the record's digest.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, cast

import structlog

from app.services.core.errors import ApiKeyNotFound, InvalidApiKey, ValidationFailed
from app.services.core.redis_client import REDIS_FAILURES, register_script
from app.services.core.types import RedisClient
from app.services.identity import scripts
from app.services.identity.device_profile import DeviceProfile
from app.services.identity.key_format import (
    KEY_ID,
    MAX_PRESENTED_CHARS,
    check_pepper,
    format_key,
    new_key_id,
    new_secret,
    parse_key,
    secret_digest,
)
from app.services.identity.key_records import (
    ApiKeyRecord,
    CreatedKey,
    limits_fields,
    profile_fields,
    require_key_name,
)
from app.services.identity.limits import KeyLimits
from app.services.identity.principal import Principal, Scope, require_tenant
from app.services.identity.redis_io import float_text, guarded

log = structlog.get_logger(__name__)

# Looked up for a malformed key, so it costs the round trip an unknown id costs; never generated ('-' is not in
# the id alphabet), so it names no key.
UNUSED_KEY_ID = "-" * 8
UNMATCHABLE_DIGEST = "0" * 64  # compared against when no record exists: the comparison costs the same
ID_ATTEMPTS = 5
MAX_CACHED = 10_000
MAX_LISTED = 1000


class Keep(Enum):
    """`update`'s "leave this as it is" (None already means "remove the device profile")."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class _Cached:
    record: ApiKeyRecord | None
    digest: str
    version: int
    fetched_at: float


class KeyStore:
    def __init__(
        self,
        redis: RedisClient,
        *,
        namespace: str,
        pepper: bytes,
        cache_seconds: float = 5.0,
        version_check_seconds: float = 0.5,
        last_used_every_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._tag = f"{{{namespace}:api-keys}}"
        self._pepper = check_pepper(pepper)
        self._cache_seconds = cache_seconds
        self._version_check_seconds = version_check_seconds
        self._last_used_every = last_used_every_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._cache: dict[str, _Cached] = {}
        self._version = 0
        self._version_checked_at = float("-inf")
        self._touched: dict[str, float] = {}  # key id -> when this process last wrote its last_used_at
        self._create_script = register_script(redis, scripts.CREATE_KEY)
        self._revoke_script = register_script(redis, scripts.REVOKE_KEY)
        self._update_script = register_script(redis, scripts.UPDATE_KEY)
        self._read_script = register_script(redis, scripts.READ_KEY)
        self._touch_script = register_script(redis, scripts.TOUCH_KEY)

    def _record_key(self, key_id: str) -> str:
        return f"{self._tag}:key:{key_id}"

    def _tenant_index(self, tenant: str) -> str:
        return f"{self._tag}:tenant:{tenant}"

    @property
    def _ids_index(self) -> str:
        return f"{self._tag}:ids"

    @property
    def _version_key(self) -> str:
        return f"{self._tag}:version"

    # Management: rare, by operators or admin keys.

    async def create(
        self,
        *,
        name: str,
        tenant: str,
        scopes: frozenset[Scope],
        expires_at: float | None = None,
        limits: KeyLimits | None = None,
        device_profile: DeviceProfile | None = None,
    ) -> CreatedKey:
        """A new key: the plaintext comes back here once and is kept nowhere."""
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise ValidationFailed("expires_at must be in the future.", details={"field": "expires_at"})
        if not scopes:
            raise ValidationFailed("A key needs at least one scope.", details={"field": "scopes"})
        secret = new_secret()
        for _ in range(ID_ATTEMPTS):
            record = ApiKeyRecord(
                key_id=new_key_id(),
                name=require_key_name(name),
                tenant=require_tenant(tenant),
                scopes=scopes,
                created_at=now,
                expires_at=expires_at,
                limits=limits or KeyLimits(),
                device_profile=device_profile,
            )
            fields = record.to_fields(secret_digest(self._pepper, secret))
            keys = [self._record_key(record.key_id), self._ids_index, self._tenant_index(record.tenant)]
            args = [record.key_id, float_text(now), *(part for pair in fields.items() for part in pair)]
            if await guarded(self._create_script(keys=keys, args=args)):
                log.info(
                    "api_key_created",
                    key_id=record.key_id,
                    tenant=record.tenant,
                    scopes=sorted(scope.value for scope in scopes),
                )
                return CreatedKey(format_key(record.key_id, secret), record)
        raise RuntimeError("no free API key id after several draws")  # 36^8 ids: only a broken RNG gets here

    async def get(self, key_id: str) -> ApiKeyRecord:
        if not KEY_ID.fullmatch(key_id):
            raise ApiKeyNotFound(details={"key_id": key_id})
        fields = await guarded(cast(Any, self._redis.hgetall(self._record_key(key_id))))
        if not fields:
            raise ApiKeyNotFound(details={"key_id": key_id})
        return ApiKeyRecord.from_fields(fields)

    async def list_keys(self, tenant: str | None = None, *, limit: int = MAX_LISTED) -> list[ApiKeyRecord]:
        """Newest first; one tenant's, or every tenant's."""
        index = self._ids_index if tenant is None else self._tenant_index(require_tenant(tenant))
        key_ids = await guarded(cast(Any, self._redis.zrevrange(index, 0, min(limit, MAX_LISTED) - 1)))
        if not key_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:  # one slot: one node on a cluster
            for key_id in key_ids:
                pipe.hgetall(self._record_key(key_id))
            replies = await guarded(pipe.execute())
        return [ApiKeyRecord.from_fields(fields) for fields in replies if fields]

    async def revoke(self, key_id: str) -> ApiKeyRecord:
        """Refused by this process at once, by every other within about `version_check_seconds`."""
        await self._change(self._revoke_script, key_id, [float_text(self._clock())])
        log.info("api_key_revoked", key_id=key_id)
        return await self.get(key_id)

    async def update(
        self,
        key_id: str,
        *,
        limits: KeyLimits | Keep = KEEP,
        device_profile: DeviceProfile | Keep | None = KEEP,
    ) -> ApiKeyRecord:
        """New limits and/or device profile (None removes it); seen by every replica as a revocation is."""
        fields: dict[str, str] = {}
        if not isinstance(limits, Keep):
            fields.update(limits_fields(limits))
        if not isinstance(device_profile, Keep):
            fields.update(profile_fields(device_profile))
        if fields:
            await self._change(self._update_script, key_id, [part for pair in fields.items() for part in pair])
        return await self.get(key_id)

    async def _change(self, script: Any, key_id: str, args: list[str]) -> None:
        if not KEY_ID.fullmatch(key_id):
            raise ApiKeyNotFound(details={"key_id": key_id})
        if not await guarded(script(keys=[self._record_key(key_id), self._version_key], args=args)):
            raise ApiKeyNotFound(details={"key_id": key_id})
        self._cache.pop(key_id, None)  # this process need not wait for its next version check

    # The hot path.

    async def verify(self, presented: str) -> Principal:
        """The caller a key names, or INVALID_API_KEY. Unknown, revoked, expired, malformed and wrong-secret
        keys take the same steps (digest, lookup, constant-time compare) and fail with the same error."""
        parsed = parse_key(presented)
        key_id = parsed.key_id if parsed else UNUSED_KEY_ID
        digest = secret_digest(self._pepper, parsed.secret if parsed else presented[:MAX_PRESENTED_CHARS])
        cached = await self._lookup(key_id)
        matches = hmac.compare_digest(digest, cached.digest)
        now = self._clock()
        record = cached.record
        if parsed is None or record is None or not matches or not record.usable_at(now):
            raise InvalidApiKey()
        await self._touch(record, now)
        return record.principal()

    async def _lookup(self, key_id: str) -> _Cached:
        await self._follow_version()
        cached = self._cache.get(key_id)
        if (
            cached is not None
            and cached.version == self._version
            and self._monotonic() - cached.fetched_at < self._cache_seconds
        ):
            return cached
        fields, version_text = await guarded(
            self._read_script(keys=[self._record_key(key_id), self._version_key], args=[])
        )
        version = int(version_text)
        self._see_version(version)
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        if not pairs:  # unknown ids are not cached: an attacker's guesses must not fill memory
            return _Cached(None, UNMATCHABLE_DIGEST, version, self._monotonic())
        fetched = _Cached(ApiKeyRecord.from_fields(pairs), pairs["digest"], version, self._monotonic())
        if version == self._version:  # a read that raced with a newer version is used once, not kept
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[key_id] = fetched
        return fetched

    async def _follow_version(self) -> None:
        """At most once per `version_check_seconds`; a failed read keeps the cache, whose entries still expire."""
        now = self._monotonic()
        if now - self._version_checked_at < self._version_check_seconds:
            return
        self._version_checked_at = now  # concurrent verifies use the cache meanwhile rather than all asking
        try:
            version = await cast(Any, self._redis.get(self._version_key))
        except REDIS_FAILURES as exc:
            log.warning("api_key_version_unreadable", reason=type(exc).__name__)
            return
        self._see_version(int(version or 0))

    def _see_version(self, version: int) -> None:
        if version > self._version:
            self._version = version
            self._cache.clear()

    async def _touch(self, record: ApiKeyRecord, now: float) -> None:
        """Write last_used_at at most every `last_used_every_seconds` per key and process: a key sending
        30 frames/s must not write its record 30 times a second."""
        last_written = max(self._touched.get(record.key_id, float("-inf")), record.last_used_at or float("-inf"))
        if now - last_written < self._last_used_every:
            return
        self._touched[record.key_id] = now
        if len(self._touched) > MAX_CACHED:
            self._touched = {record.key_id: now}
        try:
            await self._touch_script(keys=[self._record_key(record.key_id)], args=[float_text(now)])
        except REDIS_FAILURES as exc:  # a usage timestamp is not worth failing a verified request
            log.warning("api_key_last_used_not_written", key_id=record.key_id, reason=type(exc).__name__)
