"""Admission limits: how fast one session may send frames, and how many sessions (and how much TTL) one client may
open. Both are token buckets kept in Redis, each taken in one Lua round trip (`scripts.py`).

The frame rate limit is checked inside the session's own admit script (`SessionStore.admit_frame`): the session's
existence, its status and its bucket are one atomic read, so it is a value here, not a call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from redis.typing import EncodableT

from app.services.core.errors import SessionCreationLimited
from app.services.sessions import scripts
from app.services.sessions.guarded import GuardedRedis


@dataclass(frozen=True)
class FrameRateLimit:
    """Frames one session may send: `per_second` on average, `burst` at once."""

    per_second: float
    burst: int


@dataclass(frozen=True)
class CreationLimits:
    """Sessions one client may open: a token bucket of sessions, and one of TTL-seconds refilled over an hour."""

    per_minute: float = 30.0
    burst: int = 60
    ttl_budget_seconds: int = 7 * 86400
    namespace: str = "default"  # deployments sharing a Redis count apart (FLEET_NAME)


def creation_key(namespace: str, client: str) -> str:
    """One key per client, its own hash tag: a single-key script, so it runs on a cluster as on one Redis."""
    return f"session-creations:{{{namespace}|{client}}}"


class CreationBudget:
    """Each client's budget of new sessions: a session costs one session and its TTL in seconds."""

    def __init__(self, redis: GuardedRedis, limits: CreationLimits, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self.limits = limits
        self._clock = clock
        self._take = redis.script(scripts.TAKE_CREATION)

    async def take(self, client: str, ttl: int, per_minute: float | None = None) -> None:
        """Pay for one session of `ttl` seconds from `client`'s budget, or raise SessionCreationLimited.
        `per_minute`: an API key's own rate (its burst is one minute's sessions), in place of the deployment's."""
        limits = self.limits
        if per_minute is not None:
            limits = replace(limits, per_minute=per_minute, burst=max(1, math.ceil(per_minute)))
        # A session of the default TTL costs one hour of budget per hour of TTL; the budget refills in an hour.
        args: list[EncodableT] = [
            repr(self._clock()),
            limits.per_minute / 60,
            limits.burst,
            min(ttl, limits.ttl_budget_seconds),  # a TTL the budget allows at all is never refused forever
            limits.ttl_budget_seconds / 3600,
            limits.ttl_budget_seconds,
        ]
        key = creation_key(limits.namespace, client)
        reply = await self._redis.call("take_creation", lambda: self._take(keys=[key], args=args))
        if reply[0] == "limited":
            raise SessionCreationLimited(
                details={
                    "client": client,
                    "sessions_per_minute": limits.per_minute,
                    "burst": limits.burst,
                    "ttl_budget_seconds": limits.ttl_budget_seconds,
                },
                retry_after=max(float(reply[1]), 0.001),
            )
