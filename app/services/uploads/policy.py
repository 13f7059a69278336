"""Which frames get an annotated upload: a confident hazard, at most one per session per interval."""

from __future__ import annotations

import time
from collections import OrderedDict

from app.services.uploads.service import UploadJob, UploadService
from app.services.uploads.status import UploadStatus

THROTTLE_SESSIONS = 100_000  # sessions remembered for throttling; the oldest is forgotten first


class UploadPolicy:
    def __init__(self, uploads: UploadService, min_confidence: float, min_interval_seconds: float) -> None:
        self._uploads = uploads
        self._min_confidence = min_confidence
        self._min_interval = min_interval_seconds
        self._last_upload_at: OrderedDict[str, float] = OrderedDict()  # session id -> monotonic time, LRU-bounded

    def offer(self, job: UploadJob) -> UploadStatus:
        """Hand the frame to the background uploader if it qualifies; never waits."""
        if not any(d.confidence >= self._min_confidence for d in job.detections):
            return UploadStatus.NONE
        now = time.monotonic()
        last = self._last_upload_at.get(job.session_id)
        if last is not None and now - last < self._min_interval:
            return UploadStatus.SKIPPED
        if not self._uploads.submit(job):
            return UploadStatus.SHED
        self._last_upload_at[job.session_id] = now
        self._last_upload_at.move_to_end(job.session_id)
        if len(self._last_upload_at) > THROTTLE_SESSIONS:
            self._last_upload_at.popitem(last=False)
        return UploadStatus.PENDING
