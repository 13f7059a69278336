"""Redis session store: create/get/end sessions, admit frames, keep a capped detection history.

Where a session's keys live and why they share one slot: `keys.py`. Every multi-step change of a session is one Lua
script over its keys (`scripts.py`), so concurrent frames of a session never race. The limits on admission are in
`admission.py`; history writes Redis cannot take now are kept in the write-behind buffer (`write_behind.py`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from redis.typing import EncodableT

from app.services.core.breakers import AsyncBreaker
from app.services.core.errors import (
    RateLimited,
    SessionEnded,
    SessionNotFound,
    SessionStoreUnavailable,
    ValidationFailed,
)
from app.services.core.ids import SESSION_ID_BYTES
from app.services.identity.principal import LOCAL_TENANT
from app.services.sessions import scripts
from app.services.sessions.admission import CreationBudget, FrameRateLimit
from app.services.sessions.guarded import GuardedRedis
from app.services.sessions.keys import require_session_id, session_key, session_keys
from app.services.sessions.metadata import MetadataLimits, validate_metadata
from app.services.sessions.write_behind import PendingWrite, PendingWrites
from app.services.uploads.ledger import resolve_upload

RESPONSE_MARGIN_SECONDS = 0.05  # a history write leaves this much of the frame's deadline for the answer itself
MIN_KNOWN_SESSIONS = 1000


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
    tenant: str | None = None  # the session's, from the admission's own round trip; None when unverified

    @property
    def degraded(self) -> bool:
        return not self.verified


@dataclass(frozen=True)
class SessionLimits:
    default_ttl: int
    max_ttl: int
    ended_grace: int  # seconds an ended session stays readable
    history_limit: int  # entries kept per session, newest first
    frame_rate: FrameRateLimit
    metadata: MetadataLimits = field(default_factory=MetadataLimits)


def owned_by(fields: dict[str, str], owner: str | None) -> bool:
    """Whether a session's hash belongs to `owner` (None: anyone may see it; sessions from before tenants were
    recorded are `local`'s)."""
    return owner is None or fields.get("tenant", LOCAL_TENANT) == owner


def session_from_hash(session_id: str, fields: dict[str, str]) -> Session:
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


class KnownSessions:
    """Ids Redis has recently confirmed in this process (bounded, most recent kept): their kept writes are
    verified (`write_behind.py`)."""

    def __init__(self, limit: int) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, session_id: str) -> None:
        self._ids[session_id] = None
        self._ids.move_to_end(session_id)
        while len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def discard(self, session_id: str) -> None:
        self._ids.pop(session_id, None)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._ids


class SessionStore:
    """`pending`: where history writes Redis cannot take now are kept (replayed by `write_behind.Replayer` through
    `write_kept`). `fail_open`: frames of a session Redis cannot check are served unverified (degraded), not refused.
    """

    def __init__(
        self,
        redis: GuardedRedis,
        limits: SessionLimits,
        creation: CreationBudget,
        pending: PendingWrites,
        *,
        fail_open: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._limits = limits
        self._creation = creation
        self.pending = pending
        self._fail_open = fail_open
        self._clock = clock
        self._known = KnownSessions(max(pending.limit, MIN_KNOWN_SESSIONS))
        self._create = redis.script(scripts.CREATE_SESSION)
        self._admit = redis.script(scripts.ADMIT_FRAME)
        self._record = redis.script(scripts.RECORD_DETECTION)
        self._end = redis.script(scripts.END_SESSION)

    @property
    def breaker(self) -> AsyncBreaker:
        return self._redis.breaker

    async def ping(self) -> float:
        """Round trip to Redis in seconds (through the breaker)."""
        started = time.perf_counter()
        await self._redis.call("ping", lambda: cast(Awaitable[bool], self._redis.client.ping()))
        return time.perf_counter() - started

    async def create(
        self,
        metadata: dict[str, Any],
        ttl_seconds: int | None,
        client: str | None = None,
        *,
        tenant: str = LOCAL_TENANT,
        sessions_per_minute: float | None = None,
    ) -> Session:
        """`client` (an API key's id, or an address) pays for the session from its creation budget, at
        `sessions_per_minute` when its key sets one; None: not limited (internal use). The session belongs to
        `tenant`: every later read and write of it names the tenant that must own it."""
        validate_metadata(metadata, self._limits.metadata)  # before any write: what is stored can be read back
        max_ttl = self._limits.max_ttl
        ttl = self._limits.default_ttl if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= max_ttl:
            raise ValidationFailed(
                "ttl_seconds is out of range.", details={"ttl_seconds": ttl, "min": 1, "max": max_ttl}
            )
        if client is not None:
            await self._creation.take(client, ttl, sessions_per_minute)
        now = self._clock()
        session = Session(secrets.token_urlsafe(SESSION_ID_BYTES), "created", metadata, now, now, now + ttl, ttl, 0)
        fields = {
            "status": session.status,
            "metadata": json.dumps(metadata),
            "created_at": repr(now),
            "last_activity": repr(now),
            "expires_at": repr(session.expires_at),
            "ttl_seconds": str(ttl),
            "frame_count": "0",
            "tenant": tenant,
        }
        args: list[EncodableT] = [ttl, *(item for pair in fields.items() for item in pair)]
        await self._redis.call("create", lambda: self._create(keys=[session_key(session.session_id)], args=args))
        self._known.add(session.session_id)
        return session

    async def get(self, session_id: str, owner: str | None = None) -> Session:
        """`owner`: the tenant that must own it (None: any); another tenant's session is SESSION_NOT_FOUND with the
        very details an unknown one gets, so its answer tells nothing about whether it exists."""
        require_session_id(session_id)
        key = session_key(session_id)
        fields = await self._redis.call("get", lambda: cast(Awaitable[dict[str, str]], self._redis.client.hgetall(key)))
        if not fields:
            self._known.discard(session_id)
            raise SessionNotFound(details={"session_id": session_id})
        if not owned_by(fields, owner):
            raise SessionNotFound(details={"session_id": session_id})
        return session_from_hash(session_id, fields)

    async def tenant_of(self, session_id: str) -> str | None:
        """The tenant that owns the session; None when it is unknown or expired."""
        require_session_id(session_id)
        key = session_key(session_id)
        fields = await self._redis.call(
            "tenant", lambda: cast(Awaitable[list[str | None]], self._redis.client.hmget(key, ["status", "tenant"]))
        )
        return None if fields[0] is None else (fields[1] or LOCAL_TENANT)

    async def end(self, session_id: str, owner: str | None = None) -> Session:
        require_session_id(session_id)
        now = self._clock()
        args: list[EncodableT] = [repr(now), self._limits.ended_grace, owner or ""]
        found = await self._redis.call("end", lambda: self._end(keys=session_keys(session_id), args=args))
        if not found:
            raise SessionNotFound(details={"session_id": session_id})
        return await self.get(session_id, owner)

    async def admit_frame(self, session_id: str, owner: str | None = None) -> FrameAdmission:
        """One round trip: the session exists, belongs to `owner` (None: any), is open and within its rate limit;
        its TTL slides. The frame is counted once it is served (record_detection), not here: a frame that fails is
        no frame of the session."""
        require_session_id(session_id)  # even in degraded mode: such a frame could never be recorded
        rate = self._limits.frame_rate
        args: list[EncodableT] = [repr(self._clock()), rate.per_second, rate.burst, owner or ""]
        try:
            reply = await self._redis.call("admit_frame", lambda: self._admit(keys=session_keys(session_id), args=args))
        except SessionStoreUnavailable:
            if not self._fail_open:
                raise
            return FrameAdmission(verified=False)
        outcome = reply[0]
        if outcome == "missing":
            self._known.discard(session_id)
            raise SessionNotFound(details={"session_id": session_id})
        if outcome == "foreign":  # the owner's session stays known: nothing about it changed
            raise SessionNotFound(details={"session_id": session_id})
        if outcome == "ended":
            raise SessionEnded(details={"session_id": session_id})
        if outcome == "limited":
            retry_after = float(reply[1])
            raise RateLimited(details={"session_id": session_id}, retry_after=max(retry_after, 0.001))
        self._known.add(session_id)
        return FrameAdmission(verified=True, tenant=str(reply[1]) if len(reply) > 1 else LOCAL_TENANT)

    async def record_detection(
        self,
        session_id: str,
        entry: dict[str, Any],
        admission: FrameAdmission,
        deadline: float | None = None,
        tracking: str | None = None,
        owner: str | None = None,
    ) -> int | None:
        """Append to the session's history and count the frame; the session's frame_count, or None when the write
        is kept for replay: Redis is down, or it could not answer before `deadline` (time.monotonic) came near.
        `tracking`: the frame's tracking update Redis could not take; the write is kept with it, and replayed after
        it, so the two land together. `owner`: the tenant that must own the session (None: any), checked again here
        because a frame served unverified was never checked."""
        verified = admission.verified or session_id in self._known
        write = PendingWrite(
            session_id, json.dumps(entry), admission.degraded, self._clock(), verified, tracking=tracking, owner=owner
        )
        if tracking is not None:
            self.pending.keep(write)
            return None
        remaining = None if deadline is None else deadline - time.monotonic() - RESPONSE_MARGIN_SECONDS
        try:
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                frames = await self._redis.call("record_detection", lambda: self._apply(write))
        except (SessionStoreUnavailable, TimeoutError):
            self.pending.keep(write)  # replayed within a second of Redis answering; a replay is idempotent
            return None
        if not frames:  # the session expired while its frame was served: nothing to count it in
            self._known.discard(session_id)
            return None
        return int(frames)

    async def write_kept(self, write: PendingWrite) -> int:
        """A kept history write, replayed (`write_behind.Replayer`): the session's frame_count, 0 if it is gone."""
        return await self._redis.call("replay", lambda: self._apply(write))

    async def _apply(self, write: PendingWrite) -> int:
        counts_frame = "1" if write.counts_frame else "0"
        args: list[EncodableT] = [
            write.entry,
            self._limits.history_limit,
            repr(write.at),
            counts_frame,
            write.owner or "",
        ]
        return int(await self._record(keys=session_keys(write.session_id), args=args))

    async def history(
        self, session_id: str, limit: int, offset: int, owner: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Most recent first, with each entry's upload URL filled in once known (`ledger.py`)."""
        await self.get(session_id, owner)
        _, history_key, uploads_key = session_keys(session_id)[:3]

        async def read() -> tuple[list[str], int, dict[str, str]]:
            async with self._redis.client.pipeline(transaction=False) as pipe:
                pipe.lrange(history_key, offset, offset + limit - 1)
                pipe.llen(history_key)
                pipe.hgetall(uploads_key)
                items, total, uploads = await pipe.execute()
            return items, total, uploads

        raw_items, total, uploads = await self._redis.call("history", read)
        items = [json.loads(raw) for raw in raw_items]
        now = self._clock()
        for item in items:  # the upload's recorded outcome, or `lost` once a queued one is overdue
            item["upload"] = resolve_upload(item.get("upload"), item.get("request_id"), uploads, now)
        return items, total
