"""Bounded polling: tests wait on a condition, never on a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL_SECONDS = 0.05


async def wait_for(
    condition: Callable[[], Awaitable[bool]], what: str = "condition", within: float = 15.0, every: float = POLL_SECONDS
) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, f"{what}: not met within {within} s"
        await asyncio.sleep(every)


def wait_until(condition: Callable[[], bool], what: str, within: float = 30) -> None:
    """`wait_for` for synchronous tests (a browser's, a subprocess's)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        time.sleep(POLL_SECONDS)
