"""One frame through the service: admit to its session -> read -> detect -> record in history -> queue the upload."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from app.services.errors import ShuttingDown
from app.services.inference.registry import ModelRegistry
from app.services.inference.types import Detection, DetectionResult, DetectOptions, ModelInfo
from app.services.metrics import Metrics
from app.services.sessions.store import FrameAdmission, SessionStore
from app.services.uploads.policy import UploadPolicy
from app.services.uploads.service import UploadJob
from app.services.uploads.status import UploadStatus


@dataclass(frozen=True)
class FrameResult:
    request_id: str
    session_id: str
    result: DetectionResult
    admission: FrameAdmission
    model: ModelInfo


def detection_json(detection: Detection) -> dict[str, Any]:
    """One detection as every answer and history entry shows it: the box nested, like the API's schema."""
    d = detection
    return {
        "label": d.label,
        "class_id": d.class_id,
        "confidence": d.confidence,
        "box": {"x1": d.x1, "y1": d.y1, "x2": d.x2, "y2": d.y2},
    }


def history_entry(
    request_id: str, result: DetectionResult, admission: FrameAdmission, upload: UploadStatus, model: ModelInfo
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "at": datetime.now(UTC).isoformat(),
        "hazard_counts": dict(Counter(d.label for d in result.detections)),
        "detections": [detection_json(d) for d in result.detections],
        "image": {"width": result.width, "height": result.height},
        "degraded": admission.degraded,
        "upload": {"status": upload.value},
        "model": {"name": model.name, "version": model.version},
    }


class DetectionService:
    def __init__(
        self,
        sessions: SessionStore,
        upload_policy: UploadPolicy,
        metrics: Metrics,
        registry: ModelRegistry,
    ) -> None:
        self._sessions = sessions
        self._upload_policy = upload_policy
        self._metrics = metrics
        self._registry = registry
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

    async def serve_frame(
        self,
        session_id: str,
        request_id: str,
        read_frame: Callable[[], Awaitable[bytes]],
        options: DetectOptions,
        deadline: float,
        model: str | None = None,
    ) -> FrameResult:
        """`model` picks a loaded version by name; the active one by default. The engine is taken once, at
        admission: a hot-swap meanwhile does not move this frame to another model."""
        if self._closing:
            raise ShuttingDown(retry_after=1)
        engine = self._registry.engine_for(model)  # refuse before touching the session when nothing can serve it
        structlog.contextvars.bind_contextvars(session_id=session_id, model=engine.info.name)
        self._in_flight += 1
        self._idle.clear()
        try:
            admission = await self._sessions.admit_frame(session_id)
            frame = await read_frame()
            result = await engine.detect(frame, options, deadline)
            upload_status = self._upload_policy.offer(UploadJob(session_id, request_id, frame, result.detections))
            entry = history_entry(request_id, result, admission, upload_status, engine.info)
            await self._sessions.record_detection(session_id, entry, admission)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()
        self._observe(result, admission, engine.info.name)
        structlog.contextvars.bind_contextvars(timings_ms=result.timings_ms, hazards=len(result.detections))
        return FrameResult(request_id, session_id, result, admission, engine.info)

    def _observe(self, result: DetectionResult, admission: FrameAdmission, model: str) -> None:
        for stage, milliseconds in result.timings_ms.items():
            self._metrics.stage_latency.labels(stage, model).observe(milliseconds / 1000)
        for detection in result.detections:
            self._metrics.detections.labels(detection.label, model).inc()
        self._metrics.frames.labels("degraded" if admission.degraded else "verified", model).inc()
