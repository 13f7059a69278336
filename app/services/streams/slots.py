"""How many streams this process holds open, in all and per API key: each costs a connection and a window of frames,
so one more past STREAM_MAX_PER_PROCESS, or past STREAM_MAX_PER_KEY for its key, is refused rather than letting
streams (or one key's streams) crowd out everything else. A slot is given back however its stream ends."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from app.services.observability.metrics import Metrics

Full = Literal["process", "key"]


class StreamSlots:
    def __init__(self, per_process: int, per_key: int, metrics: Metrics) -> None:
        self._per_process = per_process
        self._per_key = per_key
        self._metrics = metrics
        self.open = 0
        self._by_key: Counter[str] = Counter()

    @contextmanager
    def hold(self, key_id: str | None) -> Iterator[Full | None]:
        """Yields None while the stream holds a slot (`key_id` None: an anonymous caller, no per-key limit); what is
        full, nothing held, when the process or the key holds every slot it may."""
        if self.open >= self._per_process:
            yield "process"
            return
        if key_id is not None and self._by_key[key_id] >= self._per_key:
            yield "key"
            return
        self.open += 1
        if key_id is not None:
            self._by_key[key_id] += 1
        self._metrics.streams_open.inc()
        try:
            yield None
        finally:
            self.open -= 1
            if key_id is not None:
                self._by_key[key_id] -= 1
                if not self._by_key[key_id]:
                    del self._by_key[key_id]
            self._metrics.streams_open.dec()
