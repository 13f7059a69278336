"""Bounds on the local store of annotated frames: total bytes and age, oldest frames removed first.

At 24 frames/s with hazards the local store grew by 4 GB in 10 minutes, on a volume Kubernetes caps at 1 GiB
(an emptyDir past its sizeLimit gets the pod evicted). The store keeps an index of its frames (oldest first)
and removes the oldest whenever a new frame would pass `max_bytes`, or a frame is older than `max_age_seconds`.
A removed frame's media URL answers 404, like any other unknown media id.

Methods do blocking file I/O and are thread-safe: call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

# Debris of writes that never finished: `write_atomic`'s temporaries and the health check's probe files.
DEBRIS_PATTERNS = (".*.tmp", ".probe-*")


@dataclass(frozen=True)
class _Stored:
    modified_at: float
    size: int
    path: Path


def remove_debris(directory: Path) -> int:
    """Remove temporaries a crashed or failed write left under `directory` (at start: nobody is writing)."""
    removed = 0
    for pattern in DEBRIS_PATTERNS:
        for leftover in directory.rglob(pattern):
            try:
                leftover.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("stale_temporary_not_removed", file=str(leftover), error=type(exc).__name__)
                continue
            removed += 1
    return removed


class Retention:
    def __init__(self, root: Path, max_bytes: int | None, max_age_seconds: float) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self._frames: deque[_Stored] = deque()  # oldest first
        self._bytes = 0
        self._lock = threading.Lock()
        self.removed = 0

    @property
    def stored_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._frames)

    def scan(self) -> int:
        """At start: remove debris, index every stored frame (older layouts' sub-folders too), then prune."""
        if not self.root.is_dir():
            return 0
        debris = remove_debris(self.root)
        found = []
        for path in self.root.rglob("*.jpg"):
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append(_Stored(stat.st_mtime, stat.st_size, path))
        found.sort(key=lambda stored: stored.modified_at)
        with self._lock:
            self._frames = deque(found)
            self._bytes = sum(stored.size for stored in found)
        pruned = self.prune()
        log.info("local_storage_scanned", frames=len(self._frames), bytes=self._bytes, debris=debris, pruned=pruned)
        return debris

    def added(self, path: Path, size: int) -> int:
        """Index a frame just written, then prune; returns how many frames were removed."""
        with self._lock:
            self._frames.append(_Stored(time.time(), size, path))
            self._bytes += size
        return self.prune()

    def prune(self, now: float | None = None) -> int:
        """Remove the oldest frames while over the byte bound or past the age bound."""
        now = time.time() if now is None else now
        removed = 0
        while True:
            with self._lock:
                if not self._frames or not self._over_bounds(self._frames[0], now):
                    break
                oldest = self._frames.popleft()
                self._bytes -= oldest.size
            try:
                oldest.path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("local_frame_not_removed", file=oldest.path.name, error=type(exc).__name__)
            removed += 1
        self.removed += removed
        return removed

    def _over_bounds(self, oldest: _Stored, now: float) -> bool:
        if self.max_bytes is not None and self._bytes > self.max_bytes:
            return True
        return self.max_age_seconds > 0 and oldest.modified_at < now - self.max_age_seconds
