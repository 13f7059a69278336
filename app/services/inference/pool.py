"""A warmed pool of OpenVINO infer requests behind asyncio admission control.

Admission is a bounded count of requests inside the engine (decoding or waiting for
an infer request); past it, callers are rejected at once. Each request carries a
deadline; one that passes while waiting is dropped before it reaches the model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import openvino as ov

from app.services.errors import DeadlineExceeded, Overloaded
from app.services.inference.types import PoolStats

Output = npt.NDArray[np.float32]


class InferencePool:
    def __init__(self, compiled: ov.CompiledModel, size: int, max_queue: int) -> None:
        self.size = size
        self._max_queue = max_queue
        self._requests = ov.AsyncInferQueue(compiled, size)
        self._requests.set_callback(self._on_done)
        self._slots = asyncio.Semaphore(size)
        self._queued = self._in_flight = self._rejected = self._expired = self._completed = 0

    def stats(self) -> PoolStats:
        return PoolStats(self.size, self._queued, self._in_flight, self._rejected, self._expired, self._completed)

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Hold a place in the bounded queue for the whole engine call; full queue -> Overloaded at once."""
        if self._queued >= self._max_queue:
            self._rejected += 1
            raise Overloaded(retry_after=1, details={"queue_size": self._max_queue})
        self._queued += 1
        try:
            yield
        finally:
            self._queued -= 1

    async def infer(self, batch: npt.NDArray[np.uint8], deadline: float) -> tuple[Output, float, float]:
        """Run one batch before `deadline` (time.monotonic); returns (output, queue wait s, infer s)."""
        waited_from = time.monotonic()
        try:
            async with asyncio.timeout_at(self._loop_deadline(deadline)):
                await self._slots.acquire()
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
