"""How many streams this process holds open: each costs a connection and a window of frames, so the process
refuses one more past STREAM_MAX_PER_PROCESS rather than letting streams crowd out everything else."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.services.observability.metrics import Metrics


class StreamSlots:
    def __init__(self, limit: int, metrics: Metrics) -> None:
        self._limit = limit
        self._metrics = metrics
        self.open = 0

    @contextmanager
    def hold(self) -> Iterator[bool]:
        """Yields True while the stream holds a slot; False (nothing held) when every slot is taken."""
        if self.open >= self._limit:
            yield False
            return
        self.open += 1
        self._metrics.streams_open.inc()
        try:
            yield True
        finally:
            self.open -= 1
            self._metrics.streams_open.dec()
