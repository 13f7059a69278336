"""The control center's sessions view: live sessions, most recently active first, read without an index.

Sessions keep no index on purpose (see `counting.py`), so the listing SCANs session hashes, as the
active-sessions gauge does, but stops after `scan_cap` of them: a page view costs at most that many keys read,
however many sessions Redis holds. Past the cap the listing says it is partial (which sessions it missed is
arbitrary: SCAN's order); the gauge still counts them all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from app.services.core.breakers import AsyncBreaker
from app.services.core.errors import SessionStoreUnavailable
from app.services.core.types import RedisClient
from app.services.sessions.guarded import STORE_FAILURES
from app.services.sessions.keys import SCAN_BATCH, SESSION_MATCH, session_id_of
from app.services.sessions.store import Session, session_from_hash

T = TypeVar("T")
SCAN_CAP = 2000


@dataclass(frozen=True)
class SessionListing:
    sessions: list[Session]  # neither ended nor expired, most recently active first, at most `limit`
    scanned: int  # session hashes read
    partial: bool  # the scan stopped at its cap: Redis holds more sessions than were read


class SessionLister:
    def __init__(self, redis: RedisClient, breaker: AsyncBreaker, scan_cap: int = SCAN_CAP) -> None:
        self._redis = redis
        self._breaker = breaker
        self._scan_cap = scan_cap

    async def live(self, limit: int) -> SessionListing:
        return await self._guarded(lambda: self._scan(limit))

    async def _guarded(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self._breaker.call(operation)
        except STORE_FAILURES as exc:
            raise SessionStoreUnavailable(details={"reason": type(exc).__name__}, retry_after=1) from exc

    async def _scan(self, limit: int) -> SessionListing:
        keys: list[str] = []
        partial = False
        async for key in self._redis.scan_iter(match=SESSION_MATCH, count=SCAN_BATCH, _type="hash"):
            if len(keys) == self._scan_cap:
                partial = True
                break
            keys.append(key)
        found: list[Session] = []
        for start in range(0, len(keys), SCAN_BATCH):
            batch = keys[start : start + SCAN_BATCH]
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.hgetall(key)
                replies: list[dict[str, str]] = await pipe.execute()
            for key, fields in zip(batch, replies, strict=True):
                if fields.get("status") in (None, "ended"):  # None: expired since the scan saw it
                    continue
                try:
                    found.append(session_from_hash(session_id_of(key), fields))
                except (KeyError, ValueError):  # half-written by a script still running: the next view shows it
                    continue
        found.sort(key=lambda session: session.last_activity, reverse=True)
        return SessionListing(found[:limit], len(keys), partial)
