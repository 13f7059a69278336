"""Failed API key attempts per client address: past API_KEY_FAILURES_PER_MINUTE, 429 with Retry-After.

One Redis counter per address and minute (fixed window), under the deployment's key hash tag (one slot: cluster
safe). Only failures touch it, so a valid key never costs a round trip here, and a fleet behind one carrier NAT
keeps working while one of its devices sends a stale key: the throttle answers failures, it never refuses a key
that verifies. Secrets have 256 bits, so the throttle is not what stops guessing; it bounds the load and the
noise a scanner causes (each failure costs a key lookup and a log line).
"""

from __future__ import annotations

import structlog

from app.services.core.errors import KeyAttemptsLimited
from app.services.core.redis_client import REDIS_FAILURES, register_script
from app.services.core.types import RedisClient

log = structlog.get_logger(__name__)

WINDOW_SECONDS = 60

# KEYS[1] the address's counter; ARGV[1] the window. -> {failures in this window, seconds the window has left}
COUNT_FAILURE = """
local failures = redis.call('INCR', KEYS[1])
if failures == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
local left = redis.call('TTL', KEYS[1])
if left < 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])); left = tonumber(ARGV[1]) end
return {failures, left}
"""


class FailedKeyAttempts:
    def __init__(self, redis: RedisClient, *, namespace: str, per_minute: int) -> None:
        self._tag = f"{{{namespace}:api-keys}}"
        self._per_minute = per_minute
        self._count = register_script(redis, COUNT_FAILURE)

    def _key(self, address: str) -> str:
        return f"{self._tag}:failures:{address}"

    async def count(self, address: str) -> None:
        """Count one failure of `address`; raises KeyAttemptsLimited once it is past the limit. Redis down: the
        failure is not counted (the caller answers 401 as it would anyway), never a 500."""
        try:
            failures, left = await self._count(keys=[self._key(address)], args=[WINDOW_SECONDS])
        except REDIS_FAILURES as exc:
            log.warning("api_key_failure_not_counted", reason=type(exc).__name__)
            return
        if int(failures) > self._per_minute:
            raise KeyAttemptsLimited(details={"failures_per_minute": self._per_minute}, retry_after=max(int(left), 1))
