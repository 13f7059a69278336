"""Write-behind for degraded mode: history writes Redis could not take, kept in memory and replayed in order."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as redis
import structlog

from app.services.errors import SessionStoreUnavailable

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PendingWrite:
    session_id: str
    entry: str
    counts_frame: bool
    at: float


ApplyWrite = Callable[[PendingWrite], Awaitable[int]]  # 1 if applied, 0 if its session is gone


class PendingWrites:
    """Oldest first; past `limit` the oldest is dropped (counted) so memory stays bounded while Redis is down."""

    def __init__(self, limit: int) -> None:
        self._writes: deque[PendingWrite] = deque(maxlen=limit)
        self.dropped = 0
        self.replayed = 0

    def __len__(self) -> int:
        return len(self._writes)

    def keep(self, write: PendingWrite) -> None:
        if len(self._writes) == self._writes.maxlen:
            self.dropped += 1
            log.warning("pending_write_dropped", session_id=self._writes[0].session_id, reason="buffer full")
        self._writes.append(write)

    async def replay(self, apply: ApplyWrite) -> int:
        """Apply kept writes, oldest first, until the store fails again. Returns how many were written."""
        written = 0
        while self._writes:
            write = self._writes[0]
            try:
                applied = await apply(write)
            except SessionStoreUnavailable:
                break
            except redis.RedisError as exc:  # refused for good (not "down"): it must not block the writes behind it
                applied, reason = 0, f"refused: {type(exc).__name__}"
            else:
                reason = "session not found"
            self._writes.popleft()
            written += int(bool(applied))
            if not applied:
                log.warning("pending_write_discarded", session_id=write.session_id, reason=reason)
        self.replayed += written
        return written


async def replay_forever(replay: Callable[[], Awaitable[int]], pending: PendingWrites, interval: float) -> None:
    """The background task that flushes kept writes once Redis answers again."""
    while True:
        await asyncio.sleep(interval)
        if not pending:
            continue
        try:
            written = await replay()
        except Exception:  # one bad write must not end replay for the life of the process
            log.exception("pending_writes_replay_failed")
            continue
        if written:
            log.info("pending_writes_replayed", written=written, left=len(pending))
