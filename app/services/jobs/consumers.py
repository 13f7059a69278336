"""SAQ workers inside one process: batch consumers (and, in a worker process, live ones) over one engine.

SAQ's `Worker.start` owns the process's signals and waits out its upkeep timers at stop. A process here
already has an owner for signals (uvicorn, or hazard-worker's own), so this drives SAQ's public steps
instead: `process()` in `concurrency` loops plus `upkeep()` (sweeping a dead worker's frames back into the
queue). Stop: no new frame is taken, the frames in hand finish (bounded), then the loops are cancelled; a
frame a loop had only just taken goes back to the queue (SAQ retries a cancelled job).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from saq import Worker
from saq.queue.redis import RedisQueue
from saq.types import Context

from app.services.core.asyncio_tasks import cancel_all
from app.services.jobs.processor import FrameProcessor
from app.services.jobs.queue import ABORT_CHECK_SECONDS, BATCH_FUNCTION, LIVE_FUNCTION, FrameQueue

log = structlog.get_logger(__name__)
DEQUEUE_TIMEOUT_SECONDS = 1  # a loop re-checks for a stop this often while the queue is empty
RETRY_MIN_SECONDS, RETRY_MAX_SECONDS = 0.1, 5.0  # back-off while the queue's Redis fails every dequeue
JobFunction = Callable[..., Awaitable[Any]]


class QueueConsumers:
    def __init__(
        self,
        queue: FrameQueue,
        processor: FrameProcessor,
        *,
        process_id: str,
        batch_concurrency: int,
        live_concurrency: int,
        sweep_seconds: int,
    ) -> None:
        self._processor = processor
        self._consumers = [
            (
                self._worker(queue.batch, BATCH_FUNCTION, processor.batch_frame, process_id, sweep_seconds),
                batch_concurrency,
            )
        ]
        if live_concurrency:
            live = self._worker(queue.live, LIVE_FUNCTION, processor.live_frame, process_id, sweep_seconds)
            self._consumers.append((live, live_concurrency))
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def _worker(
        queue: RedisQueue, name: str, function: JobFunction, process_id: str, sweep_seconds: int
    ) -> Worker[Context]:
        return Worker(
            queue,
            functions=[(name, function)],
            id=f"{process_id}:{name}",
            timers={"sweep": sweep_seconds, "abort": ABORT_CHECK_SECONDS, "schedule": 1, "worker_info": 10},
            dequeue_timeout=DEQUEUE_TIMEOUT_SECONDS,
        )

    async def start(self) -> None:
        for worker, concurrency in self._consumers:
            await worker.queue.connect()
            self._tasks += await worker.upkeep()
            self._tasks += [
                asyncio.create_task(self._consume(worker), name=f"consume-{worker.id}") for _ in range(concurrency)
            ]
        log.info("queue_consumers_started", consumers={w.id: n for w, n in self._consumers})

    async def _consume(self, worker: Worker[Context]) -> None:
        loop = asyncio.get_running_loop()
        pause = RETRY_MIN_SECONDS
        while not self._stopping:
            calls, started = self._processor.calls, loop.time()
            await worker.process()  # SAQ swallows a failed dequeue: it returns at once with nothing run
            if self._processor.calls == calls and loop.time() - started < DEQUEUE_TIMEOUT_SECONDS / 2:
                await asyncio.sleep(pause)  # the queue's Redis refuses: do not spin on it
                pause = min(pause * 2, RETRY_MAX_SECONDS)
            else:
                pause = RETRY_MIN_SECONDS

    async def stop(self, seconds: float) -> None:
        """Take no new frame, let the frames in hand finish for up to `seconds`, then end the loops."""
        self._stopping = True
        if not await self._processor.in_hand.wait_idle(seconds):
            log.warning("worker_stop_timed_out", frames_in_hand=self._processor.in_hand.count)
        await cancel_all(self._tasks)
        for worker, _ in self._consumers:
            worker.event.set()
