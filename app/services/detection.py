"""One frame through the service: admit to its session -> detect -> record in history -> queue the upload."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from app.services.errors import ModelNotReady
from app.services.inference.engine import DetectionEngine, DetectionResult, DetectOptions
from app.services.metrics import Metrics
from app.services.sessions import FrameAdmission, SessionStore
from app.services.storage import UploadJob, UploadService


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
        engine_ref: Callable[[], DetectionEngine | None],
        upload_min_confidence: float,
    ) -> None:
        self._sessions = sessions
        self._uploads = uploads
        self._metrics = metrics
        self._engine_ref = engine_ref
        self._upload_min_confidence = upload_min_confidence

    def engine(self) -> DetectionEngine:
        engine = self._engine_ref()
        if engine is None:
            raise ModelNotReady()
        return engine

    async def admit(self, session_id: str) -> FrameAdmission:
        self.engine()  # refuse before touching the session when no model can serve the frame
        return await self._sessions.admit_frame(session_id)

    async def detect_frame(
        self,
        session_id: str,
        request_id: str,
        data: bytes,
        admission: FrameAdmission,
        options: DetectOptions,
        deadline: float,
    ) -> FrameResult:
        engine = self.engine()
        result = await engine.detect(data, options, deadline)
        self._observe(result, admission)
        upload_status = "none"
        if any(d.confidence >= self._upload_min_confidence for d in result.detections):
            queued = self._uploads.submit(UploadJob(session_id, request_id, data, result.detections))
            upload_status = "pending" if queued else "shed"
        await self._sessions.record_detection(
            session_id, history_entry(request_id, result, admission, upload_status), admission
        )
        return FrameResult(request_id, session_id, result, admission, engine)

    def _observe(self, result: DetectionResult, admission: FrameAdmission) -> None:
        for stage, milliseconds in result.timings_ms.items():
            self._metrics.stage_latency.labels(stage).observe(milliseconds / 1000)
        for detection in result.detections:
            self._metrics.detections.labels(detection.label).inc()
        self._metrics.frames.labels("degraded" if admission.degraded else "verified").inc()
