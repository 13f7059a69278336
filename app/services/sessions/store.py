"""Redis session store: create/get/end sessions, admit frames, keep a capped detection history.

Keys per session, with literal braces around the id (a hash tag: Redis Cluster hashes only the id, so all of a
session's keys share one slot), all sharing the session's TTL: `session:{<id>}` (hash), `session:{<id>}:history`
(list, newest first), `session:{<id>}:uploads` (hash media id -> upload outcome), and tracking's
`session:{<id>}:tracks` and `session:{<id>}:hazards` (`services/tracking/store.py`). Nothing else is written: no
index, so an expired session leaves no key behind. Every multi-step change is one Lua script over one session's keys, so
concurrent frames of a session never race and every script runs on a cluster as on one Redis.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import structlog
from redis.typing import EncodableT

from app.services.core.breakers import AsyncBreaker, BreakerOpen
from app.services.core.errors import (
    ApiError,
    RateLimited,
    SessionCreationLimited,
    SessionEnded,
    SessionNotFound,
    SessionStoreUnavailable,
    ValidationFailed,
)
from app.services.core.ids import SESSION_ID, SESSION_ID_BYTES
from app.services.core.redis_client import REDIS_FAILURES, register_script
from app.services.core.types import RedisClient, RedisObserver
from app.services.sessions import scripts
from app.services.sessions.metadata import MetadataLimits, validate_metadata
from app.services.sessions.pending import KnownSessions, PendingWrite, PendingWrites
from app.services.uploads.ledger import resolve_upload

STORE_FAILURES: tuple[type[BaseException], ...] = (*REDIS_FAILURES, BreakerOpen)

T = TypeVar("T")
log = structlog.get_logger(__name__)
# Matches session hashes only (`session:{<id>}`; ids are URL-safe base64, never a brace), not their lists.
SESSION_MATCH = "session:{*}"
SCAN_BATCH = 500  # keys per SCAN call and per pipelined status read: each round trip stays short
RESPONSE_MARGIN_SECONDS = 0.05  # a history write leaves this much of the frame's deadline for the answer itself


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


async def guarded(
    breaker: AsyncBreaker,
    name: str,
    operation: Callable[[], Awaitable[T]],
    observe: RedisObserver | None,
    unavailable: type[ApiError] = SessionStoreUnavailable,
) -> T:
    """One Redis operation through the breaker, timed; any way Redis can fail becomes `unavailable` (503)."""
    started = time.perf_counter()
    outcome = "error"
    try:
        result = await breaker.call(operation)
        outcome = "ok"
        return result
    except STORE_FAILURES as exc:
        raise unavailable(details={"reason": type(exc).__name__}, retry_after=1) from exc
    finally:
        if observe is not None:
            observe(name, outcome, time.perf_counter() - started)


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


def session_key(session_id: str) -> str:
    return f"session:{{{session_id}}}"


def _keys(session_id: str) -> list[str]:
    """The session's hash, history list, uploads hash, then its tracks and hazards (`services/tracking/store.py`):
    one hash tag, one slot (what the scripts' KEYS are; every key gets the session's TTL)."""
    base = session_key(session_id)
    return [base, f"{base}:history", f"{base}:uploads", f"{base}:tracks", f"{base}:hazards"]


def _require_session_id(session_id: str) -> None:
    """A string that cannot be a session id names no session: refused before any Redis key is built from it."""
    if not SESSION_ID.fullmatch(session_id):
        raise SessionNotFound(details={"session_id": session_id})


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
        client: RedisClient,
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
        count_max_age: float = 15.0,
        metadata_limits: MetadataLimits | None = None,
        creation_limits: CreationLimits | None = None,
        pending_file: Path | None = None,
        clock: Callable[[], float] = time.time,
        observe: RedisObserver | None = None,
    ) -> None:
        self._redis = client
        self.breaker = breaker
        self._default_ttl, self._max_ttl, self._ended_grace = default_ttl, max_ttl, ended_grace
        self._history_limit = history_limit
        self._rate, self._burst = rate_per_second, rate_burst
        self._fail_open = fail_open
        self._metadata_limits = metadata_limits or MetadataLimits()
        self._clock = clock
        self._observe = observe
        self.pending = PendingWrites(pending_limit, pending_file)
        # Applies a kept tracking update (`services/tracking/service.py`), set by the runtime.
        self.replay_tracking: Callable[[str, str], Awaitable[object]] | None = None
        self.known = KnownSessions(max(pending_limit, 1000))  # ids Redis confirmed: their kept writes are verified
        self._creation_limits = creation_limits or CreationLimits()
        self._count_max_age = count_max_age
        self._counted: tuple[float, int] | None = None  # (monotonic time, count) of the last scan
        self._count_lock = asyncio.Lock()
        self._create = register_script(client, scripts.CREATE_SESSION)
        self._admit = register_script(client, scripts.ADMIT_FRAME)
        self._record = register_script(client, scripts.RECORD_DETECTION)
        self._end = register_script(client, scripts.END_SESSION)
        self._set_upload_url = register_script(client, scripts.SET_UPLOAD_URL)
        self._take_creation = register_script(client, scripts.TAKE_CREATION)

    async def _guarded(self, name: str, operation: Callable[[], Awaitable[T]]) -> T:
        return await guarded(self.breaker, name, operation, self._observe)

    async def ping(self) -> float:
        """Round trip to Redis in seconds (through the breaker)."""
        started = time.perf_counter()
        await self._guarded("ping", lambda: cast(Awaitable[bool], self._redis.ping()))
        return time.perf_counter() - started

    async def create(self, metadata: dict[str, Any], ttl_seconds: int | None, client: str | None = None) -> Session:
        """`client` (its address) pays for the session from its creation budget; None: not limited (internal use)."""
        validate_metadata(metadata, self._metadata_limits)  # before any write: what is stored can be read back
        ttl = self._default_ttl if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= self._max_ttl:
            raise ValidationFailed(
                "ttl_seconds is out of range.", details={"ttl_seconds": ttl, "min": 1, "max": self._max_ttl}
            )
        if client is not None:
            await self._take_creation_budget(client, ttl)
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
        }
        args: list[EncodableT] = [ttl, *(item for pair in fields.items() for item in pair)]
        await self._guarded("create", lambda: self._create(keys=[session_key(session.session_id)], args=args))
        self.known.add(session.session_id)
        return session

    async def _take_creation_budget(self, client: str, ttl: int) -> None:
        limits = self._creation_limits
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
        reply = await self._guarded("take_creation", lambda: self._take_creation(keys=[key], args=args))
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

    async def get(self, session_id: str) -> Session:
        _require_session_id(session_id)
        key = session_key(session_id)
        fields = await self._guarded("get", lambda: cast(Awaitable[dict[str, str]], self._redis.hgetall(key)))
        if not fields:
            self.known.discard(session_id)
            raise SessionNotFound(details={"session_id": session_id})
        return _session_from_hash(session_id, fields)

    async def end(self, session_id: str) -> Session:
        _require_session_id(session_id)
        now = self._clock()
        found = await self._guarded(
            "end", lambda: self._end(keys=_keys(session_id), args=[repr(now), self._ended_grace])
        )
        if not found:
            raise SessionNotFound(details={"session_id": session_id})
        return await self.get(session_id)

    async def admit_frame(self, session_id: str) -> FrameAdmission:
        """One round trip: the session exists, is open and within its rate limit; its TTL slides. The frame is
        counted once it is served (record_detection), not here: a frame that fails is no frame of the session."""
        _require_session_id(session_id)  # even in degraded mode: such a frame could never be recorded
        now = self._clock()
        try:
            reply = await self._guarded(
                "admit_frame",
                lambda: self._admit(keys=_keys(session_id), args=[repr(now), self._rate, self._burst]),
            )
        except SessionStoreUnavailable:
            if not self._fail_open:
                raise
            return FrameAdmission(verified=False)
        outcome = reply[0]
        if outcome == "missing":
            self.known.discard(session_id)
            raise SessionNotFound(details={"session_id": session_id})
        if outcome == "ended":
            raise SessionEnded(details={"session_id": session_id})
        if outcome == "limited":
            retry_after = float(reply[1])
            raise RateLimited(details={"session_id": session_id}, retry_after=max(retry_after, 0.001))
        self.known.add(session_id)
        return FrameAdmission(verified=True)

    async def record_detection(
        self,
        session_id: str,
        entry: dict[str, Any],
        admission: FrameAdmission,
        deadline: float | None = None,
        tracking: str | None = None,
    ) -> int | None:
        """Append to the session's history and count the frame; the session's frame_count, or None when the write
        is kept for replay: Redis is down, or it could not answer before `deadline` (time.monotonic) came near.
        `tracking`: the frame's tracking update Redis could not take; the write is kept with it, and replayed after
        it, so the two land together."""
        verified = admission.verified or session_id in self.known
        write = PendingWrite(
            session_id, json.dumps(entry), admission.degraded, self._clock(), verified, tracking=tracking
        )
        if tracking is not None:
            self.pending.keep(write)
            return None
        remaining = None if deadline is None else deadline - time.monotonic() - RESPONSE_MARGIN_SECONDS
        try:
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                frames = await self._guarded("record_detection", lambda: self._apply(write))
        except (SessionStoreUnavailable, TimeoutError):
            self.pending.keep(write)  # replayed within a second of Redis answering; a replay is idempotent
            return None
        if not frames:  # the session expired while its frame was served: nothing to count it in
            self.known.discard(session_id)
            return None
        return int(frames)

    async def _apply(self, write: PendingWrite) -> int:
        counts_frame = "1" if write.counts_frame else "0"
        args: list[EncodableT] = [write.entry, self._history_limit, repr(write.at), counts_frame]
        return int(await self._record(keys=_keys(write.session_id), args=args))

    async def replay_pending(self) -> int:
        """Write what degraded mode kept, oldest first, until Redis fails again. Returns how many were written."""
        return await self.pending.replay(self._replay)

    async def _replay(self, write: PendingWrite) -> int:
        """A kept frame's tracking update first (its own idempotent round trip), then its history entry."""
        if write.tracking is not None and self.replay_tracking is not None:
            await self.replay_tracking(write.session_id, write.tracking)
        return await self._guarded("replay", lambda: self._apply(write))

    async def history(self, session_id: str, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Most recent first, with each entry's upload URL filled in once known."""
        await self.get(session_id)
        _, history_key, uploads_key = _keys(session_id)[:3]

        async def read() -> tuple[list[str], int, dict[str, str]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.lrange(history_key, offset, offset + limit - 1)
                pipe.llen(history_key)
                pipe.hgetall(uploads_key)
                items, total, uploads = await pipe.execute()
            return items, total, uploads

        raw_items, total, uploads = await self._guarded("history", read)
        items = [json.loads(raw) for raw in raw_items]
        now = self._clock()
        for item in items:  # the upload's recorded outcome, or `lost` once a queued one is overdue
            item["upload"] = resolve_upload(item.get("upload"), item.get("request_id"), uploads, now)
        return items, total

    async def set_upload_url(self, session_id: str, media_id: str, outcome: str) -> None:
        """Record an upload's outcome (`uploads/ledger.py`) under its media id, for as long as the session lives."""
        key, _, uploads_key = _keys(session_id)[:3]
        await self._guarded(
            "set_upload_url", lambda: self._set_upload_url(keys=[key, uploads_key], args=[media_id, outcome])
        )

    async def count_active(self) -> int:
        """Sessions neither ended nor expired, in the whole Redis (every primary of a cluster): at most
        `count_max_age` seconds old, so scrapes from every replica cost one scan per replica per interval.

        Counted by scanning session hashes, not kept in an index: an index (a zset, or per-minute INCR counters)
        is one key outside every session's slot, which no session script may touch on a cluster, must be
        trimmed by somebody (a write on a scrape), and drifts when keys expire without telling it. The scan
        reads only, and what it counts is what Redis holds: expired sessions are gone by construction.
        """
        async with self._count_lock:  # concurrent scrapes share one scan
            if self._counted is not None and time.monotonic() - self._counted[0] < self._count_max_age:
                return self._counted[1]
            active = await self._guarded("count_active", self._scan_active)
            self._counted = (time.monotonic(), active)
            return active

    async def _scan_active(self) -> int:
        # SCAN on a cluster client visits every primary; the status reads of a batch are one pipeline.
        active, batch = 0, []
        async for key in self._redis.scan_iter(match=SESSION_MATCH, count=SCAN_BATCH, _type="hash"):
            batch.append(key)
            if len(batch) == SCAN_BATCH:
                active, batch = active + await self._count_open(batch), []
        return active + (await self._count_open(batch) if batch else 0)

    async def _count_open(self, keys: list[str]) -> int:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "status")
            statuses: list[str | None] = await pipe.execute()
        return sum(status not in (None, "ended") for status in statuses)  # None: expired since the scan saw it
