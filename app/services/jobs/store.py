"""Job state in Redis: the job, its waiting frames, their per-frame meta and results.

Keys of one job share a hash tag (`job:{<id>}`, `job:{<id>}:frames|meta|results|tracks|hazards`), so every
change is one Lua script over one slot. Frame bytes wait in `:frames` only until a worker takes them (that hash expires
after JOB_FRAME_TTL_SECONDS); results and the job live JOB_RESULT_TTL_SECONDS after their last change.
The job counts `detections` (boxes over its done frames) in its hash and `hazards` (distinct confirmed tracks)
as the size of its hazards hash: a hazard id is a field there, so no retry or concurrent worker counts one twice.
A fleet-wide counter (`jobs:{<fleet>}:pending-bytes`) bounds the bytes waiting. A job belongs to the tenant whose
key created it (its `tenant` field); `jobs:{<fleet>}:recent` lists every tenant's recent jobs and
`jobs:{<fleet>}:recent:<tenant>` one tenant's. Jobs stored before tenants were recorded are `local`'s.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError
from redis.typing import EncodableT

from app.services.core.errors import Backpressure, JobFinished, JobNotFound, JobNotOpen
from app.services.identity.principal import LOCAL_TENANT
from app.services.jobs import scripts
from app.services.tracking import scripts as tracking_scripts
from app.services.tracking.store import params_json
from app.services.tracking.types import Assignment, FrameInput, TrackParams

JOB_ID_BYTES = 16
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")  # what `secrets.token_urlsafe(16)` hands out
RECENT_JOBS_KEPT = 1000
COUNTERS = ("total", "done", "failed", "cached", "detections")


@dataclass(frozen=True)
class JobLimits:
    pending_bytes: int
    frame_ttl_seconds: int
    result_ttl_seconds: int


@dataclass(frozen=True)
class NewFrame:
    data: bytes
    meta: dict[str, Any]


@dataclass(frozen=True)
class ClaimedFrame:
    """What a worker found when it went to take a frame: `state` is run, done, cancelled, expired or gone."""

    state: str
    data: bytes = b""
    meta: dict[str, Any] | None = None
    released_bytes: int = 0
    job_created_at: float = 0.0  # the job's start: job frames without a capture time are timed from it
    meta_before: dict[str, Any] | None = None  # the job's frame before this one: how far apart they were taken


def frame_id(index: int) -> str:
    return f"f{index:06d}"


def frame_index(frame: str) -> int | None:
    return int(frame[1:]) if re.fullmatch(r"f\d{6,}", frame) else None


class JobStore:
    def __init__(self, redis: Redis, fleet_name: str, limits: JobLimits) -> None:
        self._redis = redis
        self._limits = limits
        self._recent = f"jobs:{{{fleet_name}}}:recent"
        self._pending = f"jobs:{{{fleet_name}}}:pending-bytes"
        self._add = self._script(scripts.ADD_FRAMES)
        self._claim = self._script(scripts.CLAIM_FRAME)
        self._record = self._script(scripts.RECORD_RESULT)
        self._close = self._script(scripts.CLOSE_JOB)
        self._cancel = self._script(scripts.CANCEL_JOB)
        self._reserve = self._script(scripts.RESERVE_BYTES)
        self._release = self._script(scripts.RELEASE_BYTES)
        self._associate = self._script(tracking_scripts.ASSOCIATE)

    def _script(self, source: str) -> AsyncScript:
        return self._redis.register_script(source)

    @staticmethod
    def _keys(job_id: str) -> list[str]:
        base = f"job:{{{job_id}}}"
        return [base, f"{base}:frames", f"{base}:meta", f"{base}:results", f"{base}:tracks", f"{base}:hazards"]

    @staticmethod
    def checked_id(job_id: str) -> str:
        """Only ids of the issued shape may name keys: anything else is an unknown job, before Redis is asked."""
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFound(details={"job_id": job_id[:64]})
        return job_id

    def _recent_of(self, tenant: str | None) -> str:
        return self._recent if tenant is None else f"{self._recent}:{tenant}"

    async def create(
        self, name: str | None, session_id: str | None, options: dict[str, Any], tenant: str = LOCAL_TENANT
    ) -> str:
        job_id = secrets.token_urlsafe(JOB_ID_BYTES)
        now = time.time()
        fields = {
            "status": "open",
            "closed": "0",
            "name": name or "",
            "session_id": session_id or "",
            "options": json.dumps(options),
            "tenant": tenant,
            "created_at": repr(now),
            "updated_at": repr(now),
            **dict.fromkeys(COUNTERS, "0"),
        }
        key = self._keys(job_id)[0]
        async with self._redis.pipeline(transaction=True) as pipe:  # one key: one slot
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self._limits.result_ttl_seconds)
            await pipe.execute()
        for recent in (self._recent, self._recent_of(tenant)):
            await self._redis.zadd(recent, {job_id: now})
            await self._redis.zremrangebyrank(recent, 0, -RECENT_JOBS_KEPT - 1)
        return job_id

    async def add_frames(self, job_id: str, frames: list[NewFrame]) -> list[int]:
        """All of a call's frames, or none: 429 past the waiting-bytes bound, 409 when the job takes no more."""
        size = sum(len(f.data) for f in frames)
        limits = self._limits
        if not await self._reserve(keys=[self._pending], args=[size, limits.pending_bytes, limits.frame_ttl_seconds]):
            raise Backpressure(retry_after=1, details={"pending_bytes_limit": limits.pending_bytes})
        args: list[Any] = [limits.result_ttl_seconds, limits.frame_ttl_seconds, repr(time.time()), len(frames)]
        for frame in frames:
            args += [frame.data, json.dumps(frame.meta)]
        try:
            first = int(await self._add(keys=self._keys(job_id), args=args))
        except BaseException as exc:
            await self.release_bytes(size)
            if isinstance(exc, ResponseError):
                raise _job_error(job_id, exc) from None
            raise
        return list(range(first, first + len(frames)))

    async def release_bytes(self, size: int) -> None:
        if size > 0:
            await self._release(keys=[self._pending], args=[size])

    async def claim(self, job_id: str, index: int) -> ClaimedFrame:
        reply = await self._claim(keys=self._keys(job_id), args=[index, repr(time.time())])
        state, data, meta = _text(reply[0]), reply[1], reply[2]
        if state == "run":
            before = _text(reply[4])
            return ClaimedFrame(
                "run",
                bytes(data),
                json.loads(meta),
                job_created_at=float(reply[3]),
                meta_before=json.loads(before) if before else None,
            )
        if state == "cancelled":
            return ClaimedFrame("cancelled", released_bytes=int(data or 0))
        if state == "expired":
            return ClaimedFrame("expired", meta=json.loads(meta))
        return ClaimedFrame(state)

    async def record(
        self, job_id: str, index: int, result: dict[str, Any], *, failed: bool, cached: bool, detections: int
    ) -> tuple[bool, str]:
        """Store a frame's result once; returns (written, job status). Releases the frame's waiting bytes."""
        args: list[EncodableT] = [
            index,
            json.dumps(result),
            "failed" if failed else "done",
            int(cached),
            detections,
            repr(time.time()),
            self._limits.result_ttl_seconds,
        ]
        written, status, size = await self._record(keys=self._keys(job_id), args=args)
        await self.release_bytes(int(size))
        return bool(written), _text(status)

    async def track(self, job_id: str, frame: FrameInput, params: TrackParams) -> list[Assignment]:
        """The frame's detections into the job's tracks, atomically as a session's are (`tracking.scripts`); each
        detection's hazard. None are answered when the job is gone or the update was applied already (a retry):
        the hazards it confirmed are counted in the job's hazards hash all the same."""
        job, *_, tracks, hazards = self._keys(job_id)
        raw = await self._associate(
            keys=[job, tracks, hazards], args=[json.dumps(frame.as_json()), params_json(params), frame.request_id]
        )
        reply = json.loads(raw)
        if reply.get("status") != "ok" or not isinstance(reply.get("assignments"), list):  # cjson: [] reads as {}
            return []
        return [Assignment(str(hazard), bool(new), bool(upload)) for hazard, new, upload in reply["assignments"]]

    async def close(self, job_id: str, owner: str | None = None) -> str:
        """`owner`: the tenant that must own the job (None: any); another tenant's job is an unknown one."""
        try:
            return _text(await self._close(keys=self._keys(job_id), args=[repr(time.time()), owner or ""]))
        except ResponseError as exc:
            raise _job_error(job_id, exc) from None

    async def cancel(self, job_id: str, owner: str | None = None) -> None:
        try:
            released = await self._cancel(keys=self._keys(job_id), args=[repr(time.time()), owner or ""])
        except ResponseError as exc:
            raise _job_error(job_id, exc) from None
        await self.release_bytes(int(released))

    async def get(self, job_id: str) -> dict[str, Any]:
        keys = self._keys(job_id)
        async with self._redis.pipeline(transaction=False) as pipe:  # one slot: read together
            pipe.hgetall(keys[0])
            pipe.hlen(keys[5])
            raw, hazards = await pipe.execute()
        if not raw:
            raise JobNotFound(details={"job_id": job_id})
        fields = {_text(k): _text(v) for k, v in raw.items()}
        fields.setdefault("detections", fields.get("hazards", "0"))  # a job written before `hazards` meant hazards
        return {
            "job_id": job_id,
            "name": fields["name"] or None,
            "session_id": fields["session_id"] or None,
            "tenant": fields.get("tenant", LOCAL_TENANT),
            "status": fields["status"],
            "closed": fields["closed"] == "1",
            **{counter: int(fields[counter]) for counter in COUNTERS},
            "hazards": int(hazards),
            "options": json.loads(fields["options"]),
            "created_at": float(fields["created_at"]),
            "updated_at": float(fields["updated_at"]),
        }

    async def results(self, job_id: str, offset: int, limit: int) -> list[dict[str, Any]]:
        """Results of frames offset .. offset+limit-1 that have finished, in frame order."""
        indexes = list(range(offset, offset + limit))
        if not indexes:
            return []
        values = await self._redis.hmget(self._keys(job_id)[3], [str(i) for i in indexes])  # type: ignore[misc]
        return [json.loads(v) for v in values if v is not None]

    async def recent(self, limit: int, tenant: str | None = None) -> list[str]:
        """Newest first: `tenant`'s jobs, or every tenant's (None)."""
        ids = await self._redis.zrevrange(self._recent_of(tenant), 0, limit - 1)
        return [_text(i) for i in ids]

    async def pending_bytes(self) -> int:
        return int(await self._redis.get(self._pending) or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _job_error(job_id: str, exc: ResponseError) -> Exception:
    reason = str(exc)
    if "missing" in reason:
        return JobNotFound(details={"job_id": job_id})
    if "finished" in reason:
        return JobFinished(details={"job_id": job_id})
    if "closed" in reason:
        return JobNotOpen(details={"job_id": job_id})
    return cast(Exception, exc)
