"""The asyncio adapter around pybreaker: awaited outcomes, fast refusals, one trial call, concurrent calls."""

from __future__ import annotations

import asyncio

import pytest

from app.services.core.breakers import AsyncBreaker, BreakerOpen


class Down(Exception):
    """Stands for the dependency's own failure type."""


def new_breaker(fail_max: int = 2, reset_seconds: float = 60.0) -> AsyncBreaker:
    return AsyncBreaker("dependency", fail_max=fail_max, reset_seconds=reset_seconds, failures=(Down,))


async def fail() -> None:
    raise Down


async def test_awaited_failures_open_the_breaker_and_later_calls_are_refused_without_running() -> None:
    breaker = new_breaker(fail_max=2)
    with pytest.raises(Down):
        await breaker.call(fail)
    with pytest.raises(BreakerOpen):  # the second failure trips it
        await breaker.call(fail)
    ran = False

    async def probe() -> None:
        nonlocal ran
        ran = True

    with pytest.raises(BreakerOpen):
        await breaker.call(probe)
    assert breaker.state == "open" and not ran


async def test_errors_that_are_not_the_dependency_failing_do_not_count() -> None:
    breaker = new_breaker(fail_max=1)

    async def bad_input() -> None:
        raise ValueError("caller's mistake")

    for _ in range(3):
        with pytest.raises(ValueError):
            await breaker.call(bad_input)
    assert breaker.state == "closed"


async def test_after_the_reset_timeout_one_trial_call_runs_and_its_success_closes_the_breaker() -> None:
    breaker = new_breaker(fail_max=1, reset_seconds=0.05)
    with pytest.raises(BreakerOpen):
        await breaker.call(fail)
    await asyncio.sleep(0.06)
    release = asyncio.Event()

    async def slow_success() -> str:
        await release.wait()
        return "ok"

    trial = asyncio.create_task(breaker.call(slow_success))
    await asyncio.sleep(0)
    with pytest.raises(BreakerOpen, match="testing recovery"):  # only one trial at a time
        await breaker.call(slow_success)
    release.set()
    assert await trial == "ok"
    assert breaker.state == "closed"


async def test_a_call_that_succeeds_while_another_opened_the_breaker_still_returns_its_result() -> None:
    breaker = new_breaker(fail_max=1)
    release = asyncio.Event()

    async def slow_success() -> int:
        await release.wait()
        return 42

    in_flight = asyncio.create_task(breaker.call(slow_success))
    await asyncio.sleep(0)
    with pytest.raises(BreakerOpen):
        await breaker.call(fail)
    release.set()
    assert await in_flight == 42  # reporting it must not turn a done write into a "failed" one
    assert breaker.state == "open"
