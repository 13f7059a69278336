"""The job queue's own SAQ queue against a real Redis: what a sweep does when the worker sweeping dies mid-way."""

from __future__ import annotations

import asyncio
import time
import uuid

from redis.asyncio import Redis
from saq.job import Status
from saq.utils import now

from app.services.jobs.queue import SweepingQueue
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
