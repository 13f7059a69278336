"""A warmed pool of OpenVINO infer requests behind asyncio admission control.

Admission is a bounded count of live requests inside the engine (decoding or waiting for
an infer request); past it, callers are rejected at once. Each request carries a
deadline; one that passes while waiting is dropped before it reaches the model.

A free infer request goes to a waiting live (interactive) frame before any batch frame. When more live
frames wait than the pool holds, the newest is served first (adaptive LIFO): under a burst the older ones
are the likeliest to miss their deadline anyway, and they expire by it as before.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import openvino as ov

from app.services.errors import DeadlineExceeded, Overloaded
from app.services.inference.types import PoolStats, Priority

Output = npt.NDArray[np.float32]


class SlotScheduler:
    """`size` slots handed out by priority: interactive first (newest first past `size` waiting), then batch FIFO."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._free = size
        self._waiting: dict[Priority, deque[asyncio.Future[None]]] = {p: deque() for p in Priority}

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    async def acquire(self, priority: Priority) -> None:
        if self._free > 0 and not self.waiting:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[priority].append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot in the same instant the waiter gave up: pass it on
            else:
                self._waiting[priority].remove(future)
            raise

    def release(self) -> None:
        future = self._next_waiter()
        if future is None:
            self._free += 1
        else:
            future.set_result(None)

    def _next_waiter(self) -> asyncio.Future[None] | None:
        live = self._waiting[Priority.INTERACTIVE]
        if live:
            return live.pop() if len(live) > self._size else live.popleft()
        batch = self._waiting[Priority.BATCH]
        return batch.popleft() if batch else None


class InferencePool:
    def __init__(self, compiled: ov.CompiledModel, size: int, max_queue: int) -> None:
        self.size = size
        self._max_queue = max_queue
        self._requests = ov.AsyncInferQueue(compiled, size)
        self._requests.set_callback(self._on_done)
        self._slots = SlotScheduler(size)
        self._queued = self._in_flight = self._rejected = self._expired = self._completed = 0

    @property
    def waiting(self) -> int:
        """Requests waiting for an infer request, live and batch."""
        return self._slots.waiting

    def stats(self) -> PoolStats:
        return PoolStats(self.size, self._queued, self._in_flight, self._rejected, self._expired, self._completed)

    @contextmanager
    def admission(self, priority: Priority = Priority.INTERACTIVE) -> Iterator[None]:
        """Hold a place in the bounded queue for the whole engine call; full queue -> Overloaded at once.
        Batch frames are bounded by their workers' concurrency instead, and never take a live frame's place."""
        if priority is Priority.BATCH:
            yield
            return
        if self._queued >= self._max_queue:
            self._rejected += 1
            raise Overloaded(retry_after=1, details={"queue_size": self._max_queue})
        self._queued += 1
        try:
            yield
        finally:
            self._queued -= 1

    async def infer(
        self, batch: npt.NDArray[np.uint8], deadline: float, priority: Priority = Priority.INTERACTIVE
    ) -> tuple[Output, float, float]:
        """Run one batch before `deadline` (time.monotonic); returns (output, queue wait s, infer s)."""
        waited_from = time.monotonic()
        try:
            async with asyncio.timeout_at(self._loop_deadline(deadline)):
                await self._slots.acquire(priority)
        except TimeoutError:
            self._expire(deadline)
        started = time.monotonic()
        if started >= deadline:
            self._slots.release()
            self._expire(deadline)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Output] = loop.create_future()
        self._in_flight += 1
        # The slot is given back by the completion callback, not here, so a cancelled caller
        # never lets a new request in while its own is still running on the device.
        self._requests.start_async({0: batch}, (loop, future))
        output = await future
        return output, started - waited_from, time.monotonic() - started

    def _expire(self, deadline: float) -> None:
        self._expired += 1
        raise DeadlineExceeded(details={"late_by_ms": round((time.monotonic() - deadline) * 1000, 1)})

    @staticmethod
    def _loop_deadline(deadline: float) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + (deadline - time.monotonic())

    def _on_done(
        self, request: ov.InferRequest, userdata: tuple[asyncio.AbstractEventLoop, asyncio.Future[Output]]
    ) -> None:
        # Runs on an OpenVINO thread: copy the output before the request is reused, then hop to the loop.
        loop, future = userdata
        output = request.get_output_tensor(0).data.copy()
        loop.call_soon_threadsafe(self._complete, future, output)

    def _complete(self, future: asyncio.Future[Output], output: Output) -> None:
        self._in_flight -= 1
        self._completed += 1
        self._slots.release()
        if not future.done():
            future.set_result(output)
