"""Redis session store: create/get/end sessions, admit frames, keep a capped detection history.

Keys per session (all share one TTL): `session:{id}` (hash), `session:{id}:history` (list, newest first),
`session:{id}:uploads` (hash request_id -> URL). `sessions:expiry` (zset id -> expires_at) counts live ones.
Every multi-step change is one Lua script, so concurrent frames of a session never race.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis.asyncio as redis
import structlog
from redis.typing import EncodableT, FieldT

from app.services.breakers import AsyncBreaker, BreakerOpen
from app.services.errors import RateLimited, SessionEnded, SessionNotFound, SessionStoreUnavailable, ValidationFailed
from app.services.redis_client import REDIS_FAILURES
from app.services.sessions import scripts
from app.services.sessions.pending import PendingWrite, PendingWrites
from app.types import RedisObserver

STORE_FAILURES: tuple[type[BaseException], ...] = (*REDIS_FAILURES, BreakerOpen)

T = TypeVar("T")
log = structlog.get_logger(__name__)
EXPIRY_INDEX = "sessions:expiry"


@dataclass(frozen=True)
class Session:
    session_id: str
    status: str
    metadata: dict[str, Any]
    created_at: float
    last_activity: float
    expires_at: float
    ttl_seconds: int
    frame_count: int


@dataclass(frozen=True)
class FrameAdmission:
    """Whether a frame's session was checked against Redis; unverified frames run in degraded mode."""

    verified: bool
    frame_count: int | None = None

    @property
    def degraded(self) -> bool:
        return not self.verified


def _keys(session_id: str) -> list[str]:
    base = f"session:{session_id}"
    return [base, f"{base}:history", f"{base}:uploads", EXPIRY_INDEX]


def _session_from_hash(session_id: str, fields: dict[str, str]) -> Session:
    return Session(
        session_id=session_id,
        status=fields["status"],
        metadata=json.loads(fields.get("metadata", "{}")),
        created_at=float(fields["created_at"]),
        last_activity=float(fields["last_activity"]),
        expires_at=float(fields["expires_at"]),
        ttl_seconds=int(fields["ttl_seconds"]),
        frame_count=int(fields.get("frame_count", 0)),
    )


class SessionStore:
    def __init__(
        self,
        client: redis.Redis,
        breaker: AsyncBreaker,
        *,
        default_ttl: int,
        max_ttl: int,
        ended_grace: int,
        history_limit: int,
        rate_per_second: float,
        rate_burst: int,
        fail_open: bool,
        pending_limit: int,
        clock: Callable[[], float] = time.time,
        observe: RedisObserver | None = None,
    ) -> None:
        self._redis = client
        self.breaker = breaker
        self._default_ttl, self._max_ttl, self._ended_grace = default_ttl, max_ttl, ended_grace
        self._history_limit = history_limit
        self._rate, self._burst = rate_per_second, rate_burst
        self._fail_open = fail_open
        self._clock = clock
        self._observe = observe
        self.pending = PendingWrites(pending_limit)
        self._admit = client.register_script(scripts.ADMIT_FRAME)
        self._record = client.register_script(scripts.RECORD_DETECTION)
        self._end = client.register_script(scripts.END_SESSION)

    async def _guarded(self, name: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Through the breaker, timed; any way Redis can fail becomes SessionStoreUnavailable."""
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self.breaker.call(operation)
            outcome = "ok"
            return result
        except STORE_FAILURES as exc:
            raise SessionStoreUnavailable(details={"reason": type(exc).__name__}, retry_after=1) from exc
        finally:
            if self._observe is not None:
                self._observe(name, outcome, time.perf_counter() - started)

    async def ping(self) -> float:
        """Round trip to Redis in seconds (through the breaker)."""
        started = time.perf_counter()
        await self._guarded("ping", lambda: cast(Awaitable[bool], self._redis.ping()))
        return time.perf_counter() - started

    async def create(self, metadata: dict[str, Any], ttl_seconds: int | None) -> Session:
        ttl = self._default_ttl if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= self._max_ttl:
            raise ValidationFailed(
                "ttl_seconds is out of range.", details={"ttl_seconds": ttl, "min": 1, "max": self._max_ttl}
            )
        now = self._clock()
        session = Session(secrets.token_urlsafe(24), "created", metadata, now, now, now + ttl, ttl, 0)
        key, _, _, index = _keys(session.session_id)
        fields: dict[FieldT, EncodableT] = {
            "status": session.status,
            "metadata": json.dumps(metadata),
            "created_at": repr(now),
            "last_activity": repr(now),
            "expires_at": repr(session.expires_at),
            "ttl_seconds": str(ttl),
            "frame_count": "0",
        }

        async def write() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, ttl)
                pipe.zadd(index, {session.session_id: session.expires_at})
                await pipe.execute()

        await self._guarded("create", write)
        return session

    async def get(self, session_id: str) -> Session:
        key = _keys(session_id)[0]
        fields = await self._guarded("get", lambda: cast(Awaitable[dict[str, str]], self._redis.hgetall(key)))
        if not fields:
            raise SessionNotFound(details={"session_id": session_id})
        return _session_from_hash(session_id, fields)

    async def end(self, session_id: str) -> Session:
        now = self._clock()
        found = await self._guarded(
            "end", lambda: self._end(keys=_keys(session_id), args=[repr(now), self._ended_grace, session_id])
        )
        if not found:
            raise SessionNotFound(details={"session_id": session_id})
        return await self.get(session_id)

    async def admit_frame(self, session_id: str) -> FrameAdmission:
        """One round trip: the session exists, is open and within its rate limit; its TTL slides; the frame counts."""
        now = self._clock()
        try:
            reply = await self._guarded(
                "admit_frame",
                lambda: self._admit(keys=_keys(session_id), args=[repr(now), self._rate, self._burst, session_id]),
            )
        except SessionStoreUnavailable:
            if not self._fail_open:
                raise
            return FrameAdmission(verified=False)
        outcome = reply[0]
        if outcome == "missing":
            raise SessionNotFound(details={"session_id": session_id})
        if outcome == "ended":
            raise SessionEnded(details={"session_id": session_id})
        if outcome == "limited":
            retry_after = float(reply[1])
            raise RateLimited(details={"session_id": session_id}, retry_after=max(retry_after, 0.001))
        return FrameAdmission(verified=True, frame_count=int(reply[1]))

    async def record_detection(self, session_id: str, entry: dict[str, Any], admission: FrameAdmission) -> bool:
        """Append to the session's history; if Redis is down, keep the write for replay. True if written now."""
        write = PendingWrite(session_id, json.dumps(entry), counts_frame=admission.degraded, at=self._clock())
        try:
            await self._guarded("record_detection", lambda: self._apply(write))
        except SessionStoreUnavailable:
            self.pending.keep(write)
            return False
        return True

    async def _apply(self, write: PendingWrite) -> int:
        counts_frame = "1" if write.counts_frame else "0"
        args: list[str | int | float] = [
            write.entry,
            self._history_limit,
            repr(write.at),
            counts_frame,
            write.session_id,
        ]
        return int(await self._record(keys=_keys(write.session_id), args=args))

    async def replay_pending(self) -> int:
        """Write what degraded mode kept, oldest first, until Redis fails again. Returns how many were written."""
        return await self.pending.replay(lambda write: self._guarded("replay", lambda: self._apply(write)))

    async def history(self, session_id: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Most recent first, with each entry's upload URL filled in once known."""
        await self.get(session_id)
        _, history_key, uploads_key, _ = _keys(session_id)

        async def read() -> tuple[list[str], int, dict[str, str]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.lrange(history_key, offset, offset + limit - 1)
                pipe.llen(history_key)
                pipe.hgetall(uploads_key)
                items, total, uploads = await pipe.execute()
            return items, total, uploads

        raw_items, total, uploads = await self._guarded("history", read)
        items = [json.loads(raw) for raw in raw_items]
        for item in items:
            if item.get("request_id") in uploads:
                item["upload"] = {"status": "uploaded", "url": uploads[item["request_id"]]}
        return items, total

    async def set_upload_url(self, session_id: str, request_id: str, url: str) -> None:
        key, _, uploads_key, _ = _keys(session_id)

        async def write() -> None:
            ttl = await self._redis.ttl(key)
            if ttl > 0:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.hset(uploads_key, request_id, url)
                    pipe.expire(uploads_key, ttl)
                    await pipe.execute()

        await self._guarded("set_upload_url", write)

    async def count_active(self) -> int:
        now = self._clock()

        async def count() -> int:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(EXPIRY_INDEX, "-inf", now)
                pipe.zcard(EXPIRY_INDEX)
                _, active = await pipe.execute()
            return int(active)

        return await self._guarded("count_active", count)
