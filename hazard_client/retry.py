"""When to send a refused request again, and how long to wait first.

Only refusals the server says are temporary are retried: 429 and 503 answers that carry `Retry-After`. The
server takes nothing of such a call (a frame chunk refused with BACKPRESSURE is not stored, an OVERLOADED frame is
not inferred), so sending it again is safe on every route, POSTs included.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from hazard_client.errors import ApiError

RETRYABLE_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff: attempt n waits `min(max_delay, base_delay * 2**n)`, never less than the
    server's `Retry-After`, plus up to `jitter` of it (clients refused together do not come back together).
    Gives up after `attempts` tries or once the waits would pass `max_wait` seconds in all."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 10.0
    max_wait: float = 60.0
    jitter: float = 0.2
    # Called before each wait with the refusal and the delay (a progress display shows it).
    on_retry: Callable[[ApiError, float], None] | None = None

    @classmethod
    def never(cls) -> RetryPolicy:
        return cls(attempts=1)

    def delay(self, attempt: int, error: ApiError, waited: float = 0.0) -> float | None:
        """Seconds to wait before try `attempt + 1` (counting from 0) after `waited` seconds of waits so far, or
        None: give up and raise `error`."""
        if attempt + 1 >= self.attempts or not retryable(error):
            return None
        backoff = min(self.max_delay, self.base_delay * 2**attempt)
        wait = max(backoff, error.retry_after or 0.0) * (1 + random.uniform(0, self.jitter))
        return wait if waited + wait <= self.max_wait else None


def retryable(error: ApiError) -> bool:
    return error.status in RETRYABLE_STATUSES and error.retry_after is not None


# Defaults of the clients: requests are retried, live frames are not (a frame that waited is stale: the camera has
# sent newer ones; the caller decides).
DEFAULT_RETRY = RetryPolicy()
DETECT_RETRY = RetryPolicy.never()
