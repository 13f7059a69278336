"""A key's `frames_per_second`, enforced in this process: no Redis round trip on the hot path.

A token bucket per key id (burst: one second's frames). It is per replica: with N API replicas a key may send up
to N times its rate in all. Folding it into the session's admit script would make it exact only per session (the
script's keys are one session's, one cluster slot; a key's bucket lives elsewhere), so the fleet-wide limit would
cost a second round trip per frame; the per-session limit (SESSION_RATE_LIMIT_*) stays exact in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from app.services.core.errors import KeyFrameRateLimited

MAX_TRACKED_KEYS = 10_000


@dataclass
class _Bucket:
    tokens: float
    refilled_at: float


class KeyFrameRates:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key_id: str, per_second: float) -> None:
        """One frame from `key_id`'s bucket, or KeyFrameRateLimited with the seconds until the next one."""
        now = self._monotonic()
        burst = max(1.0, per_second)
        bucket = self._buckets.get(key_id)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_KEYS:
                self._buckets.clear()  # forgetting buckets only ever lets frames through: never a wrong 429
            bucket = self._buckets[key_id] = _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.refilled_at) * per_second)
        bucket.refilled_at = now
        if bucket.tokens < 1:
            wait = (1 - bucket.tokens) / per_second
            raise KeyFrameRateLimited(details={"frames_per_second": per_second}, retry_after=max(wait, 0.001))
        bucket.tokens -= 1
