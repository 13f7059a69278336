"""The control center's live latency chart: P50/P95 of this process's recent `/detect` answers.

A fixed ring of the latest answers (time, seconds) rather than deltas of the Prometheus histogram: percentiles
are exact instead of interpolated between buckets, and nothing has to sample the histogram in the background.
The ring is 2 x 8 bytes x CAPACITY (1 MiB) whatever the traffic; at more than CAPACITY answers per WINDOW it
covers less than the window, which the chart then shows as empty buckets at its start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CAPACITY = 65536
WINDOW_SECONDS = 600
BUCKET_SECONDS = 10


@dataclass(frozen=True)
class LatencySeries:
    """One point per bucket, oldest first: its start (epoch seconds), P50 and P95 (ms, None: no answer), count."""

    bucket_seconds: int
    starts: list[float]
    p50_ms: list[float | None]
    p95_ms: list[float | None]
    counts: list[int]


class LatencyWindow:
    """Answers of one route, recorded by the request middleware: client errors (4xx: refused before any work)
    are left out, server errors (504 past the deadline, 503 overloaded) are kept: they are what operators see."""

    def __init__(self, route: str, capacity: int = CAPACITY, clock: Callable[[], float] = time.time) -> None:
        self.route = route
        self._at = np.zeros(capacity)
        self._seconds = np.zeros(capacity)
        self._next = 0
        self._filled = 0
        self._clock = clock

    def observe(self, route: str, status: int, seconds: float) -> None:
        if route != self.route or 400 <= status < 500:
            return
        # One event loop writes; a read in between sees at worst one half-written slot of a 60-point chart.
        self._at[self._next] = self._clock()
        self._seconds[self._next] = seconds
        self._next = (self._next + 1) % len(self._at)
        self._filled = min(self._filled + 1, len(self._at))

    def series(self, window_seconds: int = WINDOW_SECONDS, bucket_seconds: int = BUCKET_SECONDS) -> LatencySeries:
        now = self._clock()
        last_start = now - now % bucket_seconds
        count = max(1, window_seconds // bucket_seconds)
        first_start = last_start - (count - 1) * bucket_seconds
        at, seconds = self._at[: self._filled], self._seconds[: self._filled]
        recent = at >= first_start
        at, ms = at[recent], seconds[recent] * 1000.0
        index = ((at - first_start) // bucket_seconds).astype(np.int64)
        series = LatencySeries(bucket_seconds, [], [], [], [])
        for bucket in range(count):
            values = ms[index == bucket]
            series.starts.append(first_start + bucket * bucket_seconds)
            series.counts.append(int(values.size))
            if values.size:
                p50, p95 = np.percentile(values, [50, 95])
                series.p50_ms.append(round(float(p50), 2))
                series.p95_ms.append(round(float(p95), 2))
            else:
                series.p50_ms.append(None)
                series.p95_ms.append(None)
        return series
