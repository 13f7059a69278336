"""The job queue: two SAQ queues over Redis, `live` (interactive frames of remote-mode API processes) and
`batch` (job frames). A worker serves both from one engine, live first (the pool's priority admission).

SAQ's Redis queue needs pub/sub and blocking list moves on one node, which redis-py's asyncio cluster client
does not offer: the queue (and job state) lives on QUEUE_REDIS_URL, a standalone Redis, even when sessions
live on a Redis Cluster.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import structlog
from redis.asyncio import Redis
from saq.job import TERMINAL_STATUSES, Job, Status
from saq.queue.redis import RedisQueue

from app.services.core.errors import ApiError, DeadlineExceeded, QueueUnavailable
from app.services.core.redis_client import REDIS_FAILURES
from app.services.inference.types import DetectOptions
from app.services.observability.tracing import traceparent

log = structlog.get_logger(__name__)

LIVE_FUNCTION = "live_frame"
BATCH_FUNCTION = "batch_frame"
# A completion notice can slip past in the instant between reading the job and listening for it: re-read
# the job this often while waiting, so a missed notice costs at most this much.
LIVE_RECHECK_SECONDS = 0.05
# How long past a live frame's deadline a call to the queue's Redis may stay unanswered before the frame is answered
# QUEUE_UNAVAILABLE: its own wait ends at the deadline, so only a silent Redis lasts longer.
QUEUE_SILENCE_GRACE_SECONDS = 0.2
LIVE_JOB_TTL_SECONDS = 60  # a live frame's record outlives its answer only briefly
ABORT_CHECK_SECONDS = 1  # how often a worker looks for aborted frames among those in its hands
# A sweep asks each stuck frame's worker to abort it, then waits for that worker to say so before retrying it, one
# frame after another. SAQ waits 5 s a frame: a worker killed with 8 frames in hand cost 40 s before all came back
# (the kill -9 test took 46-83 s, now ~21 s). A live worker answers within ABORT_CHECK_SECONDS; a dead one never does.
SWEEP_ABORT_WAIT_SECONDS = 2.0 * ABORT_CHECK_SECONDS
T = TypeVar("T")


class SweepingQueue(RedisQueue):
    """SAQ's Redis queue with a short wait for a dead worker's frames in its sweep, and an abort that leaves a frame
    on the active list until it is retried or finished."""

    async def sweep(self, lock: int = 60, abort: float = SWEEP_ABORT_WAIT_SECONDS) -> list[str]:
        return await super().sweep(lock, abort)

    async def abort(self, job: Job, error: str, ttl: float = 5) -> None:
        """SAQ 0.26's abort less its `LREM active` for a frame no longer queued. A sweep aborts a frame, waits, then
        retries it; SAQ took the frame off the active list at the abort, so a sweeping worker killed during the wait
        lost the frame for good (seen: a sweep took a frame just dequeued, not yet marked active, for abandoned;
        the same worker ran it and was killed: 49 of 50 frames done, nothing queued, forever). Left on the list,
        the next sweep anywhere finds it stuck and retries it; `retry` and `finish` take it off."""
        async with self._op_sem, self.redis.pipeline(transaction=True) as pipe:
            job.status = Status.ABORTING
            job.error = error
            pipe.lrem(self._queued, 0, job.id)
            pipe.zrem(self._incomplete, job.id)
            pipe.set(job.id, self.serialize(job))
            pipe.setex(job.abort_id, int(ttl), error)
            pipe.publish(job.id, job.status)
            dequeued, *_ = await pipe.execute()
        if dequeued:  # still queued: nobody runs it, it ends here
            await self.finish(job, Status.ABORTED, error=error)
            await self.redis.delete(job.abort_id)


@dataclass(frozen=True)
class QueueLimits:
    frame_timeout_seconds: int  # SAQ kills a batch frame running longer than this
    frame_retries: int  # attempts per batch frame (a killed worker's frame is retried by another)
    heartbeat_seconds: int  # an active frame not touched for this long is swept and retried
    record_ttl_seconds: int  # how long SAQ keeps a finished batch frame's record


class FrameQueue:
    def __init__(self, redis: Redis, fleet_name: str, limits: QueueLimits) -> None:
        self.live = SweepingQueue(redis, name=f"{fleet_name}:live")
        self.batch = SweepingQueue(redis, name=f"{fleet_name}:batch")
        self._limits = limits

    async def connect(self) -> None:
        await self.live.connect()
        await self.batch.connect()

    async def close(self) -> None:
        await self.live.disconnect()
        await self.batch.disconnect()  # the client both share: closing it twice is harmless

    async def enqueue_batch(self, job_id: str, index: int, options: DetectOptions, model: str | None) -> None:
        limits = self._limits
        await self.batch.enqueue(
            BATCH_FUNCTION,
            key=f"{job_id}:{index}",  # one queue entry per frame: enqueueing it twice is a no-op
            timeout=limits.frame_timeout_seconds,
            heartbeat=limits.heartbeat_seconds,
            retries=limits.frame_retries,
            ttl=limits.record_ttl_seconds,
            retry_delay=1.0,
            retry_backoff=True,
            job_id=job_id,
            index=index,
            options=options_json(options),
            model=model,
            meta=traceparent(),  # the worker continues the caller's trace; SAQ keeps no empty meta
        )

    async def run_live(self, frame: bytes, options: DetectOptions, model: str | None, deadline: float) -> Any:
        """Send a live frame to the workers and wait for its answer until `deadline` (time.monotonic).

        A frame a sweep took back unrun is sent again while its deadline allows: SAQ's sweep takes a frame a worker
        has just dequeued, and not yet marked active, for abandoned (seen in the rehearsal under load: answered 500
        `swept` though every worker was alive). The queue's Redis silent past the deadline (frozen, cut off) is
        QUEUE_UNAVAILABLE, not the workers' DEADLINE_EXCEEDED."""
        while True:
            job = await _answered_in_time(self._send_live(frame, options, model, deadline), deadline)
            while job.status not in TERMINAL_STATUSES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceeded(details={"waiting_for": "a worker"})
                try:
                    await _answered_in_time(job.refresh(until_complete=min(remaining, LIVE_RECHECK_SECONDS)), deadline)
                except TimeoutError:  # SAQ's: no answer yet
                    continue
            if job.status is Status.COMPLETE:
                return job.result
            if job.status is not Status.ABORTED or job.error != self.live.swept_error_message:
                raise ApiError(details={"worker_error": (job.error or "")[-500:]})

    async def _send_live(self, frame: bytes, options: DetectOptions, model: str | None, deadline: float) -> Job:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(details={"waiting_for": "a worker"})
        job = await self.live.enqueue(
            LIVE_FUNCTION,
            timeout=math.ceil(remaining) + 1,
            heartbeat=0,  # its deadline bounds it; a lost live frame is never retried (it would be stale)
            retries=1,
            ttl=LIVE_JOB_TTL_SECONDS,
            frame=base64.b64encode(frame).decode(),
            options=options_json(options),
            model=model,
            deadline=time.time() + remaining,  # wall clock: the worker may be another host
            meta=traceparent(),
        )
        assert job is not None  # a fresh random key is never a duplicate
        return job

    async def depth(self) -> dict[str, int]:
        return {"live": await self.live.count("queued"), "batch": await self.batch.count("queued")}


async def _answered_in_time(call: Awaitable[T], deadline: float) -> T:
    """`call` to the queue's Redis; still unanswered QUEUE_SILENCE_GRACE_SECONDS past the frame's deadline (by then
    the frame's own wait has ended, so it is Redis that is silent): 503 QUEUE_UNAVAILABLE with Retry-After."""
    try:
        async with asyncio.timeout(deadline - time.monotonic() + QUEUE_SILENCE_GRACE_SECONDS) as scope:
            return await call
    except TimeoutError as exc:
        if scope.expired():
            raise QueueUnavailable(retry_after=1, details={"reason": "no answer within the deadline"}) from exc
        raise


@contextmanager
def queue_errors() -> Iterator[None]:
    """The queue's Redis down or unreachable -> 503 QUEUE_UNAVAILABLE, the way sessions answer."""
    try:
        yield
    except REDIS_FAILURES as exc:
        raise queue_unavailable(exc) from exc


def queue_unavailable(exc: BaseException) -> QueueUnavailable:
    """The answer to a Redis failure; the client gets the failure's kind, the log its words too (which step: connect,
    read, ...), which the kind alone does not tell an operator."""
    log.warning("queue_redis_failed", error_type=type(exc).__name__, error=str(exc))
    return QueueUnavailable(retry_after=1, details={"reason": type(exc).__name__})


def options_json(options: DetectOptions) -> dict[str, Any]:
    return {"conf": options.conf, "iou": options.iou, "max_det": options.max_det}


def error_json(error: ApiError) -> dict[str, Any]:
    return {
        "code": error.code,
        "status": error.status,
        "message": error.message,
        "details": error.details,
        "retry_after": error.retry_after,
    }


def raise_error_json(error: dict[str, Any]) -> NoReturn:
    """Re-raise, in this process, the typed error a worker answered with."""
    cls = _ERRORS_BY_CODE.get(error["code"], ApiError)
    raised = cls(error["message"], details=error["details"], retry_after=error["retry_after"])
    raised.status = error["status"]
    raise raised


def _subclasses(cls: type[ApiError]) -> list[type[ApiError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


_ERRORS_BY_CODE = {cls.code: cls for cls in reversed(_subclasses(ApiError))}
