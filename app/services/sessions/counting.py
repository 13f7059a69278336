"""The active-sessions gauge: sessions neither ended nor expired, counted by scanning, never kept in an index.

An index (a zset, or per-minute INCR counters) is one key outside every session's slot, which no session script may
touch on a cluster, must be trimmed by somebody (a write on a scrape), and drifts when keys expire without telling
it. The scan reads only, and what it counts is what Redis holds: expired sessions are gone by construction.
"""

from __future__ import annotations

import asyncio
import time

from app.services.sessions.guarded import GuardedRedis
from app.services.sessions.keys import SCAN_BATCH, SESSION_MATCH

DEFAULT_MAX_AGE_SECONDS = 15.0


class ActiveSessions:
    def __init__(self, redis: GuardedRedis, max_age: float = DEFAULT_MAX_AGE_SECONDS) -> None:
        self._redis = redis
        self._max_age = max_age
        self._counted: tuple[float, int] | None = None  # (monotonic time, count) of the last scan
        self._lock = asyncio.Lock()

    async def count(self) -> int:
        """Sessions neither ended nor expired, in the whole Redis (every primary of a cluster): at most `max_age`
        seconds old, so scrapes from every replica cost one scan per replica per interval."""
        async with self._lock:  # concurrent scrapes share one scan
            if self._counted is not None and time.monotonic() - self._counted[0] < self._max_age:
                return self._counted[1]
            active = await self._redis.call("count_active", self._scan)
            self._counted = (time.monotonic(), active)
            return active

    async def _scan(self) -> int:
        # SCAN on a cluster client visits every primary; the status reads of a batch are one pipeline.
        active, batch = 0, []
        async for key in self._redis.client.scan_iter(match=SESSION_MATCH, count=SCAN_BATCH, _type="hash"):
            batch.append(key)
            if len(batch) == SCAN_BATCH:
                active, batch = active + await self._count_open(batch), []
        return active + (await self._count_open(batch) if batch else 0)

    async def _count_open(self, keys: list[str]) -> int:
        async with self._redis.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "status")
            statuses: list[str | None] = await pipe.execute()
        return sum(status not in (None, "ended") for status in statuses)  # None: expired since the scan saw it
