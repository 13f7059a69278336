"""Write-behind for degraded mode: history writes Redis could not take, kept and replayed oldest first.

Kept in memory while the process runs, saved to a file at shutdown and read back at start, so a stop while Redis
is down loses nothing. A write is *verified* when its session is known to exist (Redis admitted one of its frames
in this process): in fail-open mode anyone can send frames for made-up ids, and those writes must never push out
a real session's. Past the limit the oldest unverified write goes first; an unverified write never evicts a
verified one (it is dropped itself, counted).

`PendingWrites` is the buffer (the session store keeps writes in it); `Replayer` writes them back, a frame's kept
tracking update before its history entry, through the two appliers it is built with.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import redis.asyncio as redis
import structlog

from app.services.core.errors import SessionStoreUnavailable
from app.services.core.files import write_atomic

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PendingWrite:
    session_id: str
    entry: str
    counts_frame: bool  # the frame was served unverified: its replay also slides the session's TTL
    at: float
    verified: bool = False
    seq: int = 0  # arrival order across both queues
    tracking: str | None = None  # the frame's tracking update Redis could not take: applied before the entry
    # The tenant that must own the session (None: any): a frame served unverified while Redis was down is not
    # written into another tenant's session when it is replayed.
    owner: str | None = None


ApplyWrite = Callable[[PendingWrite], Awaitable[int]]  # > 0 if applied, 0 if its session is gone
ApplyTracking = Callable[[str, str], Awaitable[object]]  # (session id, kept tracking update)


class PendingWrites:
    """Bounded at `limit` writes in all; `dropped` counts writes pushed out for room, `discarded` writes whose
    session was gone at replay (expired, ended long ago, never existed, or Redis restarted empty)."""

    def __init__(self, limit: int, path: Path | None = None) -> None:
        self.limit = limit
        self._path = path
        self._verified: deque[PendingWrite] = deque()
        self._unverified: deque[PendingWrite] = deque()
        self._seq = 0
        self.dropped = 0
        self.discarded = 0
        self.replayed = 0

    def __len__(self) -> int:
        return len(self._verified) + len(self._unverified)

    def __iter__(self) -> Iterator[PendingWrite]:
        return iter(sorted((*self._verified, *self._unverified), key=lambda write: write.seq))

    def keep(self, write: PendingWrite) -> None:
        self._seq += 1
        write = replace(write, seq=self._seq)
        if len(self) >= self.limit:
            if self._unverified:
                victim = self._unverified.popleft()
            elif write.verified:
                victim = self._verified.popleft()
            else:
                victim = write  # a made-up id must not push out a real session's write
            self.dropped += 1
            log.warning("pending_write_dropped", session_id=victim.session_id, reason="buffer full")
            if victim is write:
                return
        (self._verified if write.verified else self._unverified).append(write)

    def _oldest(self) -> deque[PendingWrite] | None:
        if self._verified and self._unverified:
            return self._verified if self._verified[0].seq < self._unverified[0].seq else self._unverified
        return self._verified or self._unverified or None

    async def replay(self, apply: ApplyWrite) -> int:
        """Apply kept writes, oldest first, until the store fails again. Returns how many were written."""
        written = 0
        while (queue := self._oldest()) is not None:
            write = queue[0]
            try:
                applied = await apply(write)
            except SessionStoreUnavailable:
                break
            except redis.RedisError as exc:  # refused for good (not "down"): it must not block the writes behind it
                applied, reason = 0, f"refused: {type(exc).__name__}"
            else:
                reason = "session not found"
            if queue and queue[0] is write:
                queue.popleft()
            written += int(bool(applied))
            if not applied:
                self.discarded += 1
                log.info("pending_write_discarded", session_id=write.session_id, reason=reason)
        self.replayed += written
        return written

    def save(self) -> int:
        """Write what is still kept to the file (atomically; blocking I/O). Returns how many were saved."""
        if self._path is None:
            return 0
        writes = list(self)
        if not writes:
            self._path.unlink(missing_ok=True)
            return 0
        self._path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self._path, "".join(json.dumps(asdict(write)) + "\n" for write in writes).encode())
        return len(writes)

    def load(self) -> int:
        """Take back what a previous process saved (blocking I/O); the file is removed once read."""
        if self._path is None or not self._path.exists():
            return 0
        loaded = 0
        for line in self._path.read_text(encoding="utf-8").splitlines():
            try:
                fields = json.loads(line)
                write = PendingWrite(
                    session_id=str(fields["session_id"]),
                    entry=str(fields["entry"]),
                    counts_frame=bool(fields["counts_frame"]),
                    at=float(fields["at"]),
                    verified=bool(fields.get("verified", False)),
                    tracking=fields.get("tracking") if isinstance(fields.get("tracking"), str) else None,
                    owner=fields.get("owner") if isinstance(fields.get("owner"), str) else None,
                )
            except (ValueError, KeyError, TypeError):
                log.warning("pending_write_unreadable", file=str(self._path))
                continue
            self.keep(write)
            loaded += 1
        os.unlink(self._path)
        return loaded


class Replayer:
    """Writes back what `pending` kept: `write_history` applies a history write (`SessionStore.write_kept`),
    `apply_tracking` a frame's kept tracking update (`TrackingService.apply`), which goes first."""

    def __init__(self, pending: PendingWrites, write_history: ApplyWrite, apply_tracking: ApplyTracking) -> None:
        self._pending = pending
        self._write_history = write_history
        self._apply_tracking = apply_tracking

    async def replay(self) -> int:
        """Write what degraded mode kept, oldest first, until Redis fails again. Returns how many were written."""
        return await self._pending.replay(self._apply)

    async def _apply(self, write: PendingWrite) -> int:
        """A kept frame's tracking update first (its own idempotent round trip), then its history entry."""
        if write.tracking is not None:
            await self._apply_tracking(write.session_id, write.tracking)
        return await self._write_history(write)

    async def run_forever(self, interval: float) -> None:
        """The background task that flushes kept writes once Redis answers again."""
        while True:
            await asyncio.sleep(interval)
            if not self._pending:
                continue
            try:
                written = await self.replay()
            except Exception:  # one bad write must not end replay for the life of the process
                log.exception("pending_writes_replay_failed")
                continue
            if written:
                log.info("pending_writes_replayed", written=written, left=len(self._pending))
