"""Degraded mode for the registry: sightings the database could not take, kept in memory (bounded) and replayed
oldest first once it answers again. Replay is safe because a sighting is idempotent (same map entry, same report
time: counted once). Once anything is kept, later sightings queue behind it, so their order is kept too."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

from app.services.core.errors import RegistryUnavailable
from app.services.registry.records import Sighting, SightingOutcome

log = structlog.get_logger(__name__)

ApplySighting = Callable[[Sighting], Awaitable[SightingOutcome]]


class SightingBuffer:
    """Write-behind in front of `apply` (HazardRegistry.apply_sighting). Past `limit` kept sightings the oldest
    goes first (`dropped` counts them): the Redis map still holds it, and its next report brings it back."""

    def __init__(self, apply: ApplySighting, *, limit: int = 10_000) -> None:
        self._apply = apply
        self._kept: deque[Sighting] = deque()
        self._limit = limit
        self.healthy = True  # False from a failed write until a replay empties the buffer: readiness reads it
        self.dropped = 0
        self.replayed = 0

    def __len__(self) -> int:
        return len(self._kept)

    async def report(self, sighting: Sighting) -> SightingOutcome | None:
        """Write `sighting` now, or keep it (None) when the database is down or others wait before it."""
        if self._kept:
            self._keep(sighting)
            return None
        try:
            return await self._apply(sighting)
        except RegistryUnavailable:
            self._keep(sighting)
            return None

    def _keep(self, sighting: Sighting) -> None:
        if self.healthy:
            log.warning("registry_unavailable", kept=len(self._kept) + 1)
        self.healthy = False
        if len(self._kept) >= self._limit:
            victim = self._kept.popleft()
            self.dropped += 1
            log.warning("registry_sighting_dropped", map_key=victim.map_key, reason="buffer full")
        self._kept.append(sighting)

    async def replay(self) -> int:
        """Apply kept sightings, oldest first, until the database fails again. Returns how many were written."""
        written = 0
        while self._kept:
            try:
                await self._apply(self._kept[0])
            except RegistryUnavailable:
                break
            self._kept.popleft()
            written += 1
        self.replayed += written
        if not self._kept:
            self.healthy = True
        return written

    async def replay_forever(self, interval_s: float) -> None:
        """The background task that flushes kept sightings once the database answers again."""
        while True:
            await asyncio.sleep(interval_s)
            if not self._kept:
                continue
            try:
                written = await self.replay()
            except Exception:  # a sighting refused for good must not end replay for the life of the process
                log.exception("registry_replay_failed", map_key=self._kept.popleft().map_key)
                continue
            if written:
                log.info("registry_sightings_replayed", written=written, left=len(self._kept))
