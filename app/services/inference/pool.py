"""A warmed pool of OpenVINO infer requests behind asyncio admission control.

Admission is a bounded count of live requests inside the engine (decoding or waiting for
an infer request); past it, callers are rejected at once. Each request carries a
deadline; one that passes while waiting is dropped before it reaches the model. A live
request is also refused at once when the wait it can expect (the live requests ahead of it,
at the pool's measured service rate) plus its own inference would pass its deadline: it
could only time out, and queueing it would make the ones behind it wait too. Never while a
slot is free for it and for every request inside: then nobody waits. The same holds
for the live requests already waiting: under adaptive LIFO a newcomer goes before them, so
one is admitted only while the tightest deadline among them still holds with it queued.

A free infer request goes to a waiting live (interactive) frame before any batch frame. When more live
frames wait than the pool holds, the newest is served first (adaptive LIFO): under a burst the older ones
are the likeliest to miss their deadline anyway, and they expire by it as before.

With a `solo` compile (the ADAPTIVE hint), a live frame that finds the engine to itself (nothing running,
waiting or decoding) runs on it alone, every core on its one inference (LATENCY: the fastest answer), holding
every slot meanwhile; frames that overlap run on the streams, one core each (THROUGHPUT: the most frames/s).
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import numpy as np
import numpy.typing as npt
import openvino as ov
import structlog

from app.services.core.errors import DeadlineExceeded, Overloaded
from app.services.inference.types import PoolStats, Priority

Output = npt.NDArray[np.float32]
# What a started request carries to its completion: the loop and future to answer, when it started, whether alone.
Userdata = tuple[asyncio.AbstractEventLoop, asyncio.Future[Output], float, bool]
# Weight of the newest sample in the smoothed time a request holds an infer request (about the last 10 count).
SERVICE_TIME_SMOOTHING = 0.2
# ADAPTIVE: a lone frame runs solo only once no frame has overlapped another for this long. Under load every switch
# between the compiles drains the streams (in-process: ~10 % fewer frames/s with one solo run in ten).
SOLO_AFTER_OVERLAP_SECONDS = 0.05
# How long a pool is kept after its last request called back. The OpenVINO thread returns from the callback and
# finishes the request's bookkeeping (its queue's idle list, its promise) after handing the output to the loop; the
# queues and compiled model must not be destroyed under it (seen: the suite aborted). Microseconds in practice; the
# pool is let go only after `wait_for_callbacks` all the same.
KEEP_AFTER_LAST_CALLBACK_SECONDS = 1.0
# Pools with requests running or called back less than KEEP_AFTER_LAST_CALLBACK_SECONDS ago: a frame cancelled
# mid-inference lets its pool go while OpenVINO still runs its request, and an engine let go (a swap, an unload)
# may hold the last reference. Touched on the loop only.
_RUNNING: set[InferencePool] = set()
log = structlog.get_logger(__name__)


class SlotScheduler:
    """`size` slots handed out by priority: interactive first (newest first past `size` waiting), then batch FIFO.

    A live frame still decoding is expected: a free slot is kept for it rather than given to a batch frame, whose
    inference it would otherwise have to wait out when it arrives a few milliseconds later."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._free = size
        self._expected_live = 0
        self._waiting: dict[Priority, deque[asyncio.Future[None]]] = {p: deque() for p in Priority}

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    def expect_live(self) -> None:
        self._expected_live += 1

    def live_not_coming(self) -> None:
        """An expected live frame left without needing a slot: what was kept for it may go to a batch frame."""
        self._expected_live -= 1
        self._hand_out()

    async def acquire(self, priority: Priority, expected: bool = False) -> None:
        """`expected`: a live frame announced with `expect_live`; the slot kept for it is its own."""
        if expected:
            self._expected_live -= 1
        if priority is Priority.BATCH:
            can_take = self._free > self._expected_live and not self.waiting
        else:
            can_take = self._free > 0 and not self._waiting[Priority.INTERACTIVE]
        if can_take:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[priority].append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot in the same instant the waiter gave up: pass it on
            elif future in self._waiting[priority]:  # else a hand-out already skipped it
                self._waiting[priority].remove(future)
            raise

    def only_one_taken(self) -> bool:
        """The caller's slot is the only one taken and nobody waits for one."""
        return self._free == self._size - 1 and not self.waiting

    def take_all(self) -> None:
        self._free = 0

    def release(self, count: int = 1) -> None:
        self._free += count
        self._hand_out()

    def _hand_out(self) -> None:
        """Free slots to waiters, live first; a batch frame only past the slots kept for expected live frames."""
        while self._free > 0 and (future := self._next_waiter()) is not None:
            if not future.done():  # else cancelled (its deadline passed) in this loop turn, before it could leave
                self._free -= 1
                future.set_result(None)

    def _next_waiter(self) -> asyncio.Future[None] | None:
        live = self._waiting[Priority.INTERACTIVE]
        if live:
            return live.pop() if len(live) > self._size else live.popleft()
        batch = self._waiting[Priority.BATCH]
        return batch.popleft() if batch and self._free > self._expected_live else None


class InferencePool:
    def __init__(
        self,
        compiled: ov.CompiledModel,
        size: int,
        max_queue: int,
        *,
        batch_in_live_gaps: bool = False,
        latency_budget: float | None = None,
        solo: ov.CompiledModel | None = None,
    ) -> None:
        self.size = size
        self._batch_in_live_gaps = batch_in_live_gaps
        self._latency_budget = latency_budget
        self._max_queue = max_queue
        on_done = _calling_back(weakref.ref(self))
        self._requests = ov.AsyncInferQueue(compiled, size)
        self._requests.set_callback(on_done)
        self._solo_requests: ov.AsyncInferQueue | None = None  # a LATENCY compile for a frame alone
        if solo is not None:
            self._solo_requests = ov.AsyncInferQueue(solo, 1)
            self._solo_requests.set_callback(on_done)
        self._slots = SlotScheduler(size)
        self._coming: set[object] = set()  # tickets of live frames admitted, not yet at a slot (decoding)
        self._queued = self._in_flight = self._rejected = self._expired = self._completed = self._solo_runs = 0
        # Smoothed time a request holds an infer request (the streams'; a solo run is no measure of a busy pool's
        # rate); None until measured.
        self._service_s: float | None = None
        self._overlapped_at = -math.inf  # when a live frame last found others inside (ADAPTIVE)
        self._pending: dict[object, float] = {}  # live requests admitted, not yet running -> their deadlines
        self._no_live = asyncio.Event()  # no live request inside (decoding, waiting or running)
        self._no_live.set()
        self._batch_turn = asyncio.Lock()

    @property
    def waiting(self) -> int:
        """Requests waiting for an infer request, live and batch."""
        return self._slots.waiting

    @property
    def service_rate(self) -> float | None:
        """Requests per second the pool completes while busy (measured); None before the first one."""
        return None if self._service_s is None else self.size / self._service_s

    def stats(self) -> PoolStats:
        return PoolStats(
            self.size, self._queued, self._in_flight, self._rejected, self._expired, self._completed, self._solo_runs
        )

    def forget_service_time(self) -> None:
        """Measure the service time afresh from the next request. Warm-up runs are no measure of it: they pay one-off
        costs, all at once, and a swap's warm-up shares the cores with the new version's compile (seen: a new engine
        estimated 4.4 s of wait from its warm-up and refused its first live frames as OVERLOADED)."""
        self._service_s = None

    def expected_seconds(self) -> float | None:
        """How long a live request admitted now can expect to take to leave the pool: the live requests already
        inside (decoding, waiting, running) go first, `size` at a time, then its own inference. Counted in arrival
        order: adaptive LIFO only changes which of them pays the wait. None before the pool has measured a request."""
        if self._service_s is None:
            return None
        ahead = max(0, self._queued + 1 - self.size)
        return ahead * self._service_s / self.size + self._service_s

    @contextmanager
    def admission(self, priority: Priority = Priority.INTERACTIVE, deadline: float | None = None) -> Iterator[object]:
        """Hold a place in the bounded queue for the whole engine call; full queue -> Overloaded at once, and so is
        a request that can expect to pass its `deadline` (time.monotonic; or its latency budget, if sooner) before it
        is served, or to make a live request already waiting pass its own. Yields a ticket for `infer`.
        Batch frames are bounded by their workers' concurrency instead, and never take a live frame's place."""
        ticket = object()
        if priority is Priority.BATCH:
            yield ticket
            return
        self._refuse_if_full()
        if deadline is not None:
            self._pending[ticket] = self._refuse_if_late(deadline)
        self._queued += 1
        self._no_live.clear()
        self._slots.expect_live()
        self._coming.add(ticket)
        try:
            yield ticket
        finally:
            self._queued -= 1
            if not self._queued:
                self._no_live.set()
            self._pending.pop(ticket, None)
            if ticket in self._coming:  # left without reaching a slot (refused, bad image, late)
                self._coming.discard(ticket)
                self._slots.live_not_coming()

    @asynccontextmanager
    async def batch_turn(self) -> AsyncIterator[None]:
        """Where batch frames share the CPU with a live path (an API's embedded worker), they go one at a time, each
        started (decode, then inference) only at a moment with no live request inside: batch work beside a live
        frame slows it (measured on 2 cores: live inference 7 -> 12 ms P50 with batch frames decoding and running
        beside it). Elsewhere (a hazard-worker) batch frames overlap freely, live ones still first at every slot."""
        if not self._batch_in_live_gaps:
            yield
            return
        async with self._batch_turn:
            await self._no_live.wait()
            yield

    def refuse_if_busy(self, deadline: float) -> None:
        """Refuse a live frame now if `admission` would refuse it now, holding nothing: a caller checks before it
        spends anything else on the frame (a Redis round trip, its body). `admission` checks again: the engine may
        fill meanwhile."""
        self._refuse_if_full()
        self._refuse_if_late(deadline)

    def _refuse_if_full(self) -> None:
        if self._queued >= self._max_queue:
            self._rejected += 1
            raise Overloaded(retry_after=1, details={"queue_size": self._max_queue})

    def _refuse_if_late(self, deadline: float) -> float:
        """Returns when the frame must be served by: its deadline, or its latency budget if sooner (past it a live
        frame is stale long before its deadline)."""
        now = time.monotonic()
        limit = deadline if self._latency_budget is None else min(deadline, now + self._latency_budget)
        expected = self.expected_seconds()
        if expected is None or deadline <= now:  # not measured yet; or already late: DeadlineExceeded, as before
            return limit
        if self._queued < self.size:
            # A slot for it and for every frame inside: nobody waits, so nothing is gained by refusing. Without this a
            # stall (CPU throttling, a paused VM, a blocked loop) that inflated the service time past the budget
            # refused every frame of an idle pool, and with no frame served the estimate could never come down.
            return limit
        tightest = min((d for d in self._pending.values() if d > now), default=limit)
        remaining = min(limit, tightest) - now
        if expected > remaining:
            self._rejected += 1
            raise Overloaded(
                retry_after=max(1, math.ceil(expected)),
                details={"expected_wait_ms": round(expected * 1000, 1), "deadline_in_ms": round(remaining * 1000, 1)},
            )
        return limit

    async def infer(
        self,
        batch: npt.NDArray[np.uint8],
        deadline: float,
        priority: Priority = Priority.INTERACTIVE,
        ticket: object | None = None,
    ) -> tuple[Output, float, float]:
        """Run one batch before `deadline` (time.monotonic); returns (output, queue wait s, infer s).
        `ticket`: what `admission` yielded; once running, the request no longer waits on its deadline."""
        waited_from = time.monotonic()
        expected = ticket in self._coming
        self._coming.discard(ticket)
        try:
            async with asyncio.timeout_at(self._loop_deadline(deadline)):
                await self._slots.acquire(priority, expected)
        except TimeoutError:
            self.expire(deadline)
        started = time.monotonic()
        self._pending.pop(ticket, None)
        if started >= deadline:
            self._slots.release()
            self.expire(deadline)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Output] = loop.create_future()
        requests, solo = self._requests_for(priority)
        self._in_flight += 1
        _RUNNING.add(self)
        # The slot is given back by the completion callback, not here, so a cancelled caller
        # never lets a new request in while its own is still running on the device.
        # share_inputs: OpenVINO reads `batch` in place instead of copying it into the request's tensor; `batch` stays
        # referenced (this frame) and unchanged until the result is back. Every call must share: a copying call would
        # write into the tensor a previous sharing call left on the request, i.e. into that call's freed array.
        requests.start_async({0: batch}, (loop, future, started, solo), share_inputs=True)
        output = await future
        return output, started - waited_from, time.monotonic() - started

    def _requests_for(self, priority: Priority) -> tuple[ov.AsyncInferQueue, bool]:
        """The solo compile for a live frame alone (it then holds every slot: frames arriving meanwhile wait out
        one short inference), else a stream (one slot). Frames overlap under load: until none has for a while,
        lone ones stay on the streams too, instead of draining them for a solo run at every gap."""
        if self._solo_requests is None or priority is Priority.BATCH:
            return self._requests, False
        now = time.monotonic()
        if self._coming or not self._slots.only_one_taken():  # other frames inside (live, or batch): they overlap
            self._overlapped_at = now
            return self._requests, False
        if now - self._overlapped_at < SOLO_AFTER_OVERLAP_SECONDS:
            return self._requests, False
        self._slots.take_all()
        return self._solo_requests, True

    def expire(self, deadline: float) -> None:
        """Count a request that missed its deadline (waiting for a slot, or for its decode) and raise 504."""
        self._expired += 1
        raise DeadlineExceeded(details={"late_by_ms": round((time.monotonic() - deadline) * 1000, 1)})

    @staticmethod
    def _loop_deadline(deadline: float) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + (deadline - time.monotonic())

    def _complete(self, future: asyncio.Future[Output], output: Output, started: float, solo: bool) -> None:
        self._in_flight -= 1
        self._completed += 1
        if solo:
            self._solo_runs += 1  # it measured the engine alone, not the rate of a busy one
        elif self._completed - self._solo_runs > 1:
            # How long the slot was held, start to release on the loop (the hop included): what the next one waits.
            # The pool's first request pays one-off costs (allocations, kernel selection): not a service time.
            held = time.monotonic() - started
            previous = self._service_s
            self._service_s = held if previous is None else previous + SERVICE_TIME_SMOOTHING * (held - previous)
        self._slots.release(self.size if solo else 1)
        if not future.done():
            future.set_result(output)
        if self._in_flight == 0:
            asyncio.get_running_loop().call_later(KEEP_AFTER_LAST_CALLBACK_SECONDS, self._let_go_if_idle)

    def _let_go_if_idle(self) -> None:
        if self._in_flight == 0:
            self.wait_for_callbacks()
            _RUNNING.discard(self)

    def wait_for_callbacks(self) -> None:
        """Until OpenVINO's threads are out of every callback of this pool's queues. After our callback returns and
        the GIL is let go, the thread still takes the queue's lock and pushes the request onto its idle list; a
        request's `wait()` returns only once its callback is done, so `wait_all` is the barrier before the queues
        may be freed. Idle, it returns at once."""
        for queue in (self._requests, self._solo_requests):
            if queue is None:
                continue
            try:
                queue.wait_all()
            except RuntimeError as exc:  # a callback's error kept by the queue (its loop closed): nothing to wait for
                log.warning("inference_callback_failed", error=str(exc))


def let_go_of_idle_pools() -> None:
    """At shutdown, once the frames have drained: the idle pools kept for their last callback are freed now, on the
    loop, rather than by the interpreter's finalization, when OpenVINO's threads can no longer take the GIL. Each is
    freed only once OpenVINO's threads are out of its callbacks (without the wait, the suite died once with a
    segmentation fault: a pool let go right after its last frame)."""
    idle = [pool for pool in _RUNNING if pool.stats().in_flight == 0]
    for pool in idle:
        pool.wait_for_callbacks()
    _RUNNING.difference_update(idle)


def _calling_back(pool: weakref.ref[InferencePool]) -> Callable[[ov.InferRequest, Userdata], None]:
    """The queues' completion callback. It holds the pool weakly: OpenVINO keeps the callback from C++, where the
    garbage collector cannot see a cycle through it (a bound method of the pool there kept every pool, with its
    compiled model, for good). It runs on an OpenVINO thread, which must never hold the pool (were it the last
    holder, the queues would be destroyed inside their own callback): it copies the output before the request is
    reused and hands it to the loop, where the pool is looked up; _RUNNING keeps it alive until then."""

    def complete(future: asyncio.Future[Output], output: Output, started: float, solo: bool) -> None:
        alive = pool()
        if alive is not None:
            alive._complete(future, output, started, solo)

    def on_done(request: ov.InferRequest, userdata: Userdata) -> None:
        loop, future, started, solo = userdata
        loop.call_soon_threadsafe(complete, future, request.get_output_tensor(0).data.copy(), started, solo)

    return on_done
