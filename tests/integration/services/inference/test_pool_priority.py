"""Live frames before batch frames: the pool's priority admission, on its own and on the real engine."""

from __future__ import annotations

import asyncio
import time

from PIL import Image

from app.services.inference.engine import DetectionEngine
from app.services.inference.model import LoadedModel
from app.services.inference.pool import SlotScheduler
from app.services.inference.types import DetectOptions, Priority
from tests.integration.services.inference.test_engine import loaded_model, new_engine
from tests.support.images import encode
from tests.support.waiting import wait_for

__all__ = ["loaded_model"]  # the module-scoped fixture, shared with the engine tests


async def served_order(scheduler: SlotScheduler, arrivals: list[tuple[str, Priority]]) -> list[str]:
    """Hold the only slot, queue `arrivals` in order, then release: the order the waiters got the slot."""
    order: list[str] = []
    await scheduler.acquire(Priority.INTERACTIVE)

    async def wait(name: str, priority: Priority) -> None:
        await scheduler.acquire(priority)
        order.append(name)
        scheduler.release()

    tasks = []
    for name, priority in arrivals:
        tasks.append(asyncio.create_task(wait(name, priority)))
        await asyncio.sleep(0)  # let it reach the queue, so arrival order is the list's
    scheduler.release()
    await asyncio.gather(*tasks)
    return order


BATCH_BACKLOG = 30


async def test_live_waiters_go_before_batch_waiters_that_came_first() -> None:
    arrivals = [("b1", Priority.BATCH), ("b2", Priority.BATCH), ("live", Priority.INTERACTIVE), ("b3", Priority.BATCH)]
    assert await served_order(SlotScheduler(1), arrivals) == ["live", "b1", "b2", "b3"]


async def test_a_live_backlog_larger_than_the_pool_is_served_newest_first() -> None:
    arrivals = [(f"live{i}", Priority.INTERACTIVE) for i in range(3)]
    assert await served_order(SlotScheduler(1), arrivals) == ["live2", "live1", "live0"]
    within_pool = [(f"live{i}", Priority.INTERACTIVE) for i in range(2)]
    assert await served_order(SlotScheduler(2), within_pool) == ["live0", "live1"]  # FIFO while it fits


async def test_a_waiter_that_gives_up_never_holds_a_slot() -> None:
    scheduler = SlotScheduler(1)
    await scheduler.acquire(Priority.INTERACTIVE)
    waiter = asyncio.create_task(scheduler.acquire(Priority.BATCH))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert scheduler.waiting == 0
    scheduler.release()
    await asyncio.wait_for(scheduler.acquire(Priority.BATCH), 1)  # the slot came back


async def test_a_slot_released_in_the_loop_turn_a_waiter_gives_up_goes_to_the_next_waiter() -> None:
    """A deadline cancels a waiter's future; before its task can leave the queue, a release runs (the completion
    callback of the same turn). The release must skip it, not hand it the slot (the slot would be lost)."""
    for priority in Priority:
        scheduler = SlotScheduler(1)
        await scheduler.acquire(Priority.INTERACTIVE)
        giving_up = asyncio.create_task(scheduler.acquire(priority))
        next_one = asyncio.create_task(scheduler.acquire(priority))
        await asyncio.sleep(0)
        giving_up.cancel()  # its future is cancelled now; its task runs its cleanup only on the next turn
        scheduler.release()
        await asyncio.wait_for(next_one, 1)
        assert (await asyncio.gather(giving_up, return_exceptions=True))[0].__class__ is asyncio.CancelledError
        assert scheduler.waiting == 0
        scheduler.release()
        await asyncio.wait_for(scheduler.acquire(priority), 1)  # and exactly one slot exists again


async def test_live_frames_admitted_behind_a_batch_backlog_finish_first(loaded_model: LoadedModel) -> None:
    engine = new_engine(loaded_model, pool_size=1)
    frame = encode(Image.new("RGB", (640, 360), (90, 90, 90)))
    finished: list[str] = []

    async def run(name: str, priority: Priority) -> None:
        await engine.detect(frame, DetectOptions(), time.monotonic() + 30, priority)
        finished.append(name)

    batch = [asyncio.create_task(run(f"batch{i}", Priority.BATCH)) for i in range(BATCH_BACKLOG)]

    async def all_queued() -> bool:  # none still decoding: each is waiting, on the device, or done
        return engine.pool.waiting + engine.stats().in_flight + len(finished) == BATCH_BACKLOG

    await wait_for(all_queued, "the batch backlog queued")
    waiting_ahead = engine.pool.waiting
    await asyncio.gather(*batch, run("live", Priority.INTERACTIVE))
    behind = len(finished) - 1 - finished.index("live")
    # Of the batch frames waiting when it came, at most two go first (ones that took the slot while the live frame
    # was still decoding); in FIFO order every one of them would.
    assert behind >= waiting_ahead - 2, (waiting_ahead, finished)


async def test_a_slot_is_kept_for_a_live_frame_still_decoding() -> None:
    scheduler = SlotScheduler(1)
    await scheduler.acquire(Priority.BATCH)
    batch_waiter = asyncio.create_task(scheduler.acquire(Priority.BATCH))
    await asyncio.sleep(0)
    scheduler.expect_live()  # admitted, decoding: it will want the slot in a few milliseconds
    scheduler.release()
    await asyncio.sleep(0)
    assert not batch_waiter.done()  # the slot waits for the live frame
    await asyncio.wait_for(scheduler.acquire(Priority.INTERACTIVE, expected=True), 1)
    scheduler.release()
    await asyncio.wait_for(batch_waiter, 1)  # then the batch frame has it
    scheduler.expect_live()
    scheduler.live_not_coming()  # e.g. its image did not decode: nothing is kept any more
    scheduler.release()
    await asyncio.wait_for(scheduler.acquire(Priority.BATCH), 1)


async def run_batch_beside_live(loaded_model: LoadedModel, in_gaps: bool) -> None:
    """A batch frame submitted while a live frame is inside (decoding, say), then another live frame start to end."""
    frame = encode(Image.new("RGB", (640, 360), (90, 90, 90)))
    engine = DetectionEngine(loaded_model, 1, 16, max_pixels=40_000_000, batch_in_live_gaps=in_gaps)

    async def batch_waits_at_the_slot() -> bool:
        return engine.pool.waiting == 1

    with engine.pool.admission(Priority.INTERACTIVE):
        batch = asyncio.create_task(engine.detect(frame, DetectOptions(), time.monotonic() + 30, Priority.BATCH))
        await engine.detect(frame, DetectOptions(), time.monotonic() + 30)
        if in_gaps:  # an API's engine: the batch frame has not even started its decode
            assert (batch.done(), engine.pool.waiting, engine.stats().completed) == (False, 0, 1)
        else:  # a hazard-worker's engine: it decoded beside them and waits at the slot (live frames first)
            await wait_for(batch_waits_at_the_slot, "the batch frame decoded and waiting for the slot")
    await asyncio.wait_for(batch, 10)  # the gap came: it runs
    assert engine.stats().completed == 2


async def test_an_api_engine_starts_batch_frames_only_between_live_frames(loaded_model: LoadedModel) -> None:
    await run_batch_beside_live(loaded_model, in_gaps=True)


async def test_a_worker_engine_decodes_batch_frames_beside_live_ones(loaded_model: LoadedModel) -> None:
    await run_batch_beside_live(loaded_model, in_gaps=False)
