"""A key's frames_per_second in one process: a token bucket per key, one second's frames of burst."""

from __future__ import annotations

import pytest

from app.services.core.errors import KeyFrameRateLimited
from app.services.identity.frame_rates import KeyFrameRates


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_one_seconds_frames_at_once_then_its_rate() -> None:
    clock = Clock()
    rates = KeyFrameRates(clock)
    for _ in range(4):
        rates.take("key-a", 4.0)
    with pytest.raises(KeyFrameRateLimited) as refused:
        rates.take("key-a", 4.0)
    assert refused.value.retry_after == pytest.approx(0.25)
    assert refused.value.details == {"frames_per_second": 4.0}
    clock.now += 0.25
    rates.take("key-a", 4.0)


def test_keys_count_apart_and_a_slow_rate_still_lets_one_frame_through() -> None:
    rates = KeyFrameRates(Clock())
    rates.take("key-a", 0.5)
    rates.take("key-b", 0.5)
    with pytest.raises(KeyFrameRateLimited) as refused:
        rates.take("key-a", 0.5)
    assert refused.value.retry_after == pytest.approx(2.0)
