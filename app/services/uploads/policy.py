"""Which frames get an annotated upload: once per confirmed hazard (and again for a clearly better view), as
tracking decides; while it cannot (Redis down), a confident hazard at most once per session per interval."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from app.services.uploads.delivery import UploadJob
from app.services.uploads.ledger import history_upload
from app.services.uploads.service import UploadService
from app.services.uploads.status import UploadStatus

THROTTLE_SESSIONS = 100_000  # sessions remembered for throttling; the oldest is forgotten first


class UploadPolicy:
    def __init__(
        self, uploads: UploadService, min_confidence: float, min_interval_seconds: float, per_hazard: bool = True
    ) -> None:
        self._per_hazard = per_hazard  # False: tracking's decision is ignored, the interval throttle decides
        self._uploads = uploads
        self._min_confidence = min_confidence
        self._min_interval = min_interval_seconds
        self._last_upload_at: OrderedDict[str, float] = OrderedDict()  # session id -> monotonic time, LRU-bounded

    def offer(self, job: UploadJob, wanted: bool | None = None) -> UploadStatus:
        """Hand the frame to the background uploader if it qualifies; never waits. `wanted`: tracking's decision
        (the frame confirms a hazard, or shows one clearly better than its uploaded frame); None when tracking
        could not decide (Redis down), and the interval throttle decides instead."""
        if not any(d.confidence >= self._min_confidence for d in job.detections):
            return UploadStatus.NONE
        wanted = wanted if self._per_hazard else None
        if wanted is False:
            return UploadStatus.SKIPPED
        now = time.monotonic()
        last = self._last_upload_at.get(job.session_id)
        if wanted is None and last is not None and now - last < self._min_interval:
            return UploadStatus.SKIPPED
        if not self._uploads.submit(job):
            return UploadStatus.SHED
        self._last_upload_at[job.session_id] = now
        self._last_upload_at.move_to_end(job.session_id)
        if len(self._last_upload_at) > THROTTLE_SESSIONS:
            self._last_upload_at.popitem(last=False)
        return UploadStatus.PENDING

    def history_record(self, job: UploadJob, status: UploadStatus) -> dict[str, Any]:
        """The `upload` object of the frame's history entry: a queued one names its media id and settle-by time."""
        return history_upload(status, job.media_id, job.submitted_at + self._uploads.settle_seconds)
