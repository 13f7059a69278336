"""`gather_bounded`: every awaitable's result in order, never more than the limit under way at once."""

from __future__ import annotations

import asyncio

import pytest

from app.services.core.asyncio_tasks import gather_bounded


class Tally:
    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    async def work(self, value: int) -> int:
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0)  # the others get their turn while this one is under way
        await asyncio.sleep(0)
        self.running -= 1
        return value * 10


async def test_results_come_in_order_with_at_most_the_limit_under_way() -> None:
    tally = Tally()
    results = await gather_bounded((tally.work(i) for i in range(20)), limit=3)
    assert results == [i * 10 for i in range(20)]
    assert tally.most == 3


async def test_a_failure_is_raised_to_the_caller() -> None:
    async def broken() -> int:
        raise ValueError("refused")

    tally = Tally()
    with pytest.raises(ValueError, match="refused"):
        await gather_bounded([tally.work(1), broken(), tally.work(2)], limit=2)
