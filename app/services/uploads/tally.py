"""What became of uploads, counted: each outcome, each write a disk refused, and the spool's depth, each also
exported as a metric (every outcome and directory from the start, at 0)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from app.services.observability.metrics import Metrics
from app.services.uploads.status import UPLOAD_OUTCOMES, UploadStatus

DISK_DIRECTORIES = ("spool", "storage")


class UploadTally:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.outcomes: Counter[str] = Counter()
        self.disk_errors: Counter[str] = Counter()  # directory ("spool", "storage") -> writes the disk refused
        self.last_disk_error: dict[str, Any] | None = None
        for outcome in UPLOAD_OUTCOMES:
            metrics.uploads.labels(outcome.value)
        for directory in DISK_DIRECTORIES:
            metrics.upload_disk_errors.labels(directory)

    def count(self, outcome: UploadStatus) -> None:
        self.outcomes[outcome.value] += 1
        self._metrics.uploads.labels(outcome.value).inc()

    def disk_failed(self, directory: str, exc: OSError) -> None:
        self.disk_errors[directory] += 1
        self._metrics.upload_disk_errors.labels(directory).inc()
        reason = exc.strerror or type(exc).__name__
        self.last_disk_error = {"directory": directory, "reason": reason, "at": time.time()}

    def spool_size(self, entries: int) -> None:
        self._metrics.upload_spool.set(entries)
