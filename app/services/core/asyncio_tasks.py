"""Stopping background tasks for sure, and knowing when the work under way is done.

Python 3.11's `asyncio.wait_for` (which redis-py awaits for every command) can swallow a cancellation
that lands just as its inner call completes, and the task then runs on: one `cancel()` is not enough.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

CANCEL_RETRY_SECONDS = 0.1
CANCEL_GIVE_UP_SECONDS = 5.0


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel until the task has ended (bounded: a task that will not stop is left, and shutdown goes on)."""
    if task is None:
        return
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + CANCEL_GIVE_UP_SECONDS
    while not task.done() and loop.time() < give_up_at:
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_RETRY_SECONDS)
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: an error it ended with is not reported again as "never retrieved"


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        await cancel(task)


async def gather_bounded(awaitables: Iterable[Awaitable[T]], limit: int) -> list[T]:
    """`asyncio.gather`, at most `limit` awaited at once: a hundred Redis commands sent together open a hundred
    connections at once (each with its connect timeout, on a loop busy opening the others); `limit` at a time reuse
    that many."""
    permits = asyncio.Semaphore(limit)

    async def bounded(awaitable: Awaitable[T]) -> T:
        async with permits:
            return await awaitable

    return await asyncio.gather(*(bounded(awaitable) for awaitable in awaitables))


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """True once `event` is set; False if it still was not after `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


class InFlight:
    """Work under way, counted, so a stop can wait for exactly that work (bounded)."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def wait_idle(self, seconds: float) -> bool:
        """True once nothing is under way; False if something still was after `seconds`."""
        return await wait_set(self._idle, seconds)
