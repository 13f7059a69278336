"""The job queue's own SAQ queue against a real Redis: what a sweep does when the worker sweeping dies mid-way."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from saq.job import Status
from saq.utils import now

from app.services.inference.types import DetectOptions
from app.services.jobs.queue import FrameQueue, QueueLimits, SweepingQueue
from tests.support.redis_process import RedisProcess


async def a_frame_whose_sweeper_died(url: str) -> tuple[list[str], Status]:
    redis = Redis.from_url(url)
    queue = SweepingQueue(redis, name=f"test-{uuid.uuid4().hex[:8]}")
    try:
        await queue.enqueue("batch_frame", key="job:0", heartbeat=1, retries=3, timeout=30)
        job = await queue.dequeue(timeout=1)
        assert job is not None
        job.started, job.attempts, job.status = now(), 1, Status.ACTIVE  # what a worker's process() does
        job.touched = now() - 5000  # ... then it died: no sign of life for 5 s, past the 1 s heartbeat
        await redis.set(job.id, queue.serialize(job))
        sweeping = asyncio.create_task(queue.sweep(lock=1))  # aborts it, then waits for its dead worker
        deadline = time.monotonic() + 10
        while (stored := await queue.job("job:0")) is None or stored.status is not Status.ABORTING:
            assert time.monotonic() < deadline, "the sweep never aborted the frame"
            await asyncio.sleep(0.01)
        sweeping.cancel()  # the sweeping worker is killed while it waits
        await asyncio.gather(sweeping, return_exceptions=True)
        await redis.delete(queue._sweep)  # the dead sweeper's 1 s lock, gone as it would be a second later
        swept = await queue.sweep(lock=1)  # another worker's sweep
        retried = await queue.job("job:0")
        assert retried is not None
        return swept, retried.status
    finally:
        await redis.aclose()


def test_a_frame_survives_the_death_of_the_worker_sweeping_it(redis_server: RedisProcess) -> None:
    swept, status = asyncio.run(a_frame_whose_sweeper_died(redis_server.url))
    assert len(swept) == 1 and swept[0].endswith("job:0")
    assert status is Status.QUEUED  # retried: back in the queue for a live worker


async def a_live_frame_swept_as_it_was_dequeued(url: str) -> Any:
    redis = Redis.from_url(url)
    limits = QueueLimits(frame_timeout_seconds=30, frame_retries=3, heartbeat_seconds=10, record_ttl_seconds=60)
    queue = FrameQueue(redis, f"test-{uuid.uuid4().hex[:8]}", limits)
    options = DetectOptions(conf=0.25, iou=0.45, max_det=100)
    try:
        waiting = asyncio.create_task(queue.run_live(b"frame", options, None, time.monotonic() + 10))
        taken = await queue.live.dequeue(timeout=5)  # a worker has it, and has yet to mark it active ...
        assert taken is not None
        # ... when another worker's sweep reads it (not active, in the active list: abandoned) and aborts it; the
        # worker, which had marked it active meanwhile and started it, sees the abort and ends it so
        await queue.live.abort(taken, error=queue.live.swept_error_message)
        await queue.live.finish_abort(taken)
        again = await queue.live.dequeue(timeout=5)  # sent again: a live worker takes it and answers
        assert again is not None and again.id != taken.id
        await queue.live.finish(again, Status.COMPLETE, result={"answered": True})
        return await asyncio.wait_for(waiting, 5)
    finally:
        await redis.aclose()


def test_a_live_frame_swept_unrun_is_sent_again(redis_server: RedisProcess) -> None:
    assert asyncio.run(a_live_frame_swept_as_it_was_dequeued(redis_server.url)) == {"answered": True}
