"""Durations as the service reports them: milliseconds, rounded to the microsecond."""

from __future__ import annotations

import time


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def ms_since(started: float) -> float:
    """Milliseconds since `started`, a `time.perf_counter()` reading."""
    return ms(time.perf_counter() - started)
