"""One frame through the service: admit to its session -> read -> detect -> record in history -> queue the upload."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from app.services.errors import ModelNotReady, ShuttingDown
from app.services.inference.engine import DetectionEngine, DetectionResult, DetectOptions
from app.services.metrics import Metrics
from app.services.sessions import FrameAdmission, SessionStore
from app.services.storage import UploadJob, UploadService

UPLOAD_THROTTLE_SESSIONS = 100_000  # sessions remembered for upload throttling; the oldest is forgotten first


@dataclass(frozen=True)
class FrameResult:
    request_id: str
    session_id: str
    result: DetectionResult
    admission: FrameAdmission
    engine: DetectionEngine


def history_entry(request_id: str, result: DetectionResult, admission: FrameAdmission, upload: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "at": datetime.now(UTC).isoformat(),
        "hazard_counts": dict(Counter(d.label for d in result.detections)),
        "detections": [asdict(d) for d in result.detections],
        "image": {"width": result.width, "height": result.height},
        "degraded": admission.degraded,
        "upload": {"status": upload},
    }


class DetectionService:
    def __init__(
        self,
        sessions: SessionStore,
        uploads: UploadService,
        metrics: Metrics,
        current_engine: Callable[[], DetectionEngine | None],
        upload_min_confidence: float,
        upload_min_interval: float,
    ) -> None:
        self._sessions = sessions
        self._uploads = uploads
        self._metrics = metrics
        self._current_engine = current_engine
        self._upload_min_confidence = upload_min_confidence
        self._upload_min_interval = upload_min_interval
        self._last_upload_at: OrderedDict[str, float] = OrderedDict()  # session id -> monotonic time, LRU-bounded
        self._in_flight = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def refuse_new_frames(self) -> None:
        self._closing = True

    async def wait_idle(self, seconds: float) -> bool:
        """Wait for frames already accepted to finish; False if some were still running after `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def _engine(self) -> DetectionEngine:
        engine = self._current_engine()
        if engine is None:
            raise ModelNotReady()
        return engine

    async def serve_frame(
        self,
        session_id: str,
        request_id: str,
        read_frame: Callable[[], Awaitable[bytes]],
        options: DetectOptions,
        deadline: float,
    ) -> FrameResult:
        if self._closing:
            raise ShuttingDown(retry_after=1)
        engine = self._engine()  # refuse before touching the session when no model can serve the frame
        structlog.contextvars.bind_contextvars(session_id=session_id)
        self._in_flight += 1
        self._idle.clear()
        try:
            admission = await self._sessions.admit_frame(session_id)
            frame = await read_frame()
            result = await engine.detect(frame, options, deadline)
            upload_status = self._queue_upload(UploadJob(session_id, request_id, frame, result.detections))
            entry = history_entry(request_id, result, admission, upload_status)
            await self._sessions.record_detection(session_id, entry, admission)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
        self._observe(result, admission)
        structlog.contextvars.bind_contextvars(timings_ms=result.timings_ms, hazards=len(result.detections))
        return FrameResult(request_id, session_id, result, admission, engine)

    def _queue_upload(self, job: UploadJob) -> str:
        """Frames with a confident hazard go to the background uploader; never waits."""
        if not any(d.confidence >= self._upload_min_confidence for d in job.detections):
            return "none"
        now = time.monotonic()
        last = self._last_upload_at.get(job.session_id)
        if last is not None and now - last < self._upload_min_interval:
            return "skipped"
        if not self._uploads.submit(job):
            return "shed"
        self._last_upload_at[job.session_id] = now
        self._last_upload_at.move_to_end(job.session_id)
        if len(self._last_upload_at) > UPLOAD_THROTTLE_SESSIONS:
            self._last_upload_at.popitem(last=False)
        return "pending"

    def _observe(self, result: DetectionResult, admission: FrameAdmission) -> None:
        for stage, milliseconds in result.timings_ms.items():
            self._metrics.stage_latency.labels(stage).observe(milliseconds / 1000)
        for detection in result.detections:
            self._metrics.detections.labels(detection.label).inc()
        self._metrics.frames.labels("degraded" if admission.degraded else "verified").inc()
