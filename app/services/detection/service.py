"""One frame through the service: admit to its session -> read -> detect -> track -> queue the upload -> record."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from app.services.core.asyncio_tasks import InFlight
from app.services.core.errors import DeadlineExceeded, ShuttingDown
from app.services.detection.detectors import Detector
from app.services.identity.device_profile import DeviceProfile
from app.services.identity.principal import LOCAL_TENANT
from app.services.inference.codec import detection_json
from app.services.inference.types import DetectionResult, DetectOptions, ModelInfo
from app.services.observability.metrics import Metrics
from app.services.observability.tracing import stage_span
from app.services.sessions.store import FrameAdmission, SessionStore
from app.services.tracking.service import Tracked, TrackingService, frame_input
from app.services.tracking.types import Assignment, FrameMeta
from app.services.uploads.delivery import UploadJob
from app.services.uploads.policy import UploadPolicy
from app.services.uploads.status import UploadStatus


@dataclass(frozen=True)
class FrameResult:
    request_id: str
    session_id: str
    result: DetectionResult
    admission: FrameAdmission
    model: ModelInfo
    hazards: list[Assignment] | None = None  # per detection; None when tracking could not run now (degraded)


def history_entry(
    request_id: str,
    result: DetectionResult,
    admission: FrameAdmission,
    upload: UploadStatus | dict[str, Any],
    model: ModelInfo,
    hazards: list[Assignment] | None = None,
) -> dict[str, Any]:
    """`upload`: a status, or the uploads ledger's record of a queued upload (media id, settle-by time).
    `hazards`: what tracking made of each detection, when it could run."""
    detections = [detection_json(d) for d in result.detections]
    for detection, hazard in zip(detections, hazards or [], strict=False):
        detection.update(hazard_id=hazard.hazard_id, new_hazard=hazard.new_hazard)
    return {
        "request_id": request_id,
        "at": datetime.now(UTC).isoformat(),
        "hazard_counts": dict(Counter(d.label for d in result.detections)),
        "detections": detections,
        "image": {"width": result.width, "height": result.height},
        "degraded": admission.degraded,
        "upload": {"status": upload.value} if isinstance(upload, UploadStatus) else upload,
        "model": {"name": model.name, "version": model.version},
    }


async def read_before(read_frame: Callable[[], Awaitable[bytes]], deadline: float) -> bytes:
    """The frame's body, or 504 once its deadline (time.monotonic) passes: a trickled body holds nothing longer."""
    try:
        async with asyncio.timeout(deadline - time.monotonic()):
            return await read_frame()
    except TimeoutError:
        raise DeadlineExceeded(details={"stage": "body"}) from None


class DetectionService:
    def __init__(
        self,
        sessions: SessionStore,
        upload_policy: UploadPolicy,
        metrics: Metrics,
        detector: Detector,
        tracking: TrackingService | None = None,
    ) -> None:
        self._tracking = tracking
        self._sessions = sessions
        self._upload_policy = upload_policy
        self._metrics = metrics
        self._detector = detector
        self._frames = InFlight()
        self._closing = False

    @property
    def in_flight(self) -> int:
        return self._frames.count

    def refuse_new_frames(self) -> None:
        self._closing = True

    async def wait_idle(self, seconds: float) -> bool:
        """Wait for frames already accepted to finish; False if some were still running after `seconds`."""
        return await self._frames.wait_idle(seconds)

    async def serve_frame(
        self,
        session_id: str,
        request_id: str,
        read_frame: Callable[[], Awaitable[bytes]],
        options: DetectOptions,
        deadline: float,
        model: str | None = None,
        frame_meta: Callable[[], FrameMeta] | None = None,
        owner: str | None = None,
        device_profile: DeviceProfile | None = None,
    ) -> FrameResult:
        """`model` picks a loaded version by name; the active one by default. The engine is taken once, at
        admission: a hot-swap meanwhile does not move this frame to another model. `frame_meta`: where and when
        the frame was taken, known once its body has been read (multipart fields). `owner`: the tenant that must own
        the session (None: any), checked in the admission's own round trip. `device_profile`: the client key's
        camera, which places the session's hazards."""
        received_at = time.time()
        if self._closing:
            raise ShuttingDown(retry_after=1)
        detector = self._detector.bind(model)  # refuse before touching the session when nothing can serve it
        detector.refuse_if_busy(deadline)  # ... or when the engine is too busy: no Redis round trip for a 503
        structlog.contextvars.bind_contextvars(session_id=session_id, model=detector.label)
        with self._frames.hold():
            with stage_span("admission"):
                admission = await self._sessions.admit_frame(session_id, owner)
            frame = await read_before(read_frame, deadline)
            meta = frame_meta() if frame_meta is not None else FrameMeta()  # 422 before the model runs
            result, info = await detector.detect(frame, options, deadline)  # its decode and inference spans
            upload = UploadJob(session_id, request_id, frame, result.detections)
            with stage_span("tracking"):
                tenant = admission.tenant or owner or LOCAL_TENANT  # unverified: the caller's, else the default
                tracked = await self._track(upload, result, info, meta, received_at, tenant, device_profile)
            with stage_span("upload"):  # the decision and the queueing: delivery runs later, in the background
                upload_status = self._upload_policy.offer(upload, tracked.upload_wanted)
                upload_record = self._upload_policy.history_record(upload, upload_status)
            entry = history_entry(request_id, result, admission, upload_record, info, tracked.assignments)
            # Counted once served; a write Redis cannot take before the deadline is kept (frame_count: null).
            with stage_span("record"):
                frame_count = await self._sessions.record_detection(
                    session_id, entry, admission, deadline, tracked.kept, owner
                )
            admission = replace(admission, frame_count=frame_count)
        self._observe(result, admission, info.name, tracked.assignments)
        structlog.contextvars.bind_contextvars(timings_ms=result.timings_ms, hazards=len(result.detections))
        return FrameResult(request_id, session_id, result, admission, info, tracked.assignments)

    async def _track(
        self,
        upload: UploadJob,
        result: DetectionResult,
        info: ModelInfo,
        meta: FrameMeta,
        received_at: float,
        tenant: str,
        device_profile: DeviceProfile | None,
    ) -> Tracked:
        if self._tracking is None:
            return Tracked(None)
        frame = frame_input(
            upload.request_id,
            result.detections,
            meta,
            received_at=received_at,
            model=info.name,
            media_id=upload.media_id,
            image_size=(result.width, result.height),
        )
        return await self._tracking.track(upload.session_id, frame, tenant, device_profile)

    def _observe(
        self, result: DetectionResult, admission: FrameAdmission, model: str, hazards: list[Assignment] | None
    ) -> None:
        for stage, milliseconds in result.timings_ms.items():
            self._metrics.stage_latency.labels(stage, model).observe(milliseconds / 1000)
        for detection in result.detections:
            self._metrics.detections.labels(detection.label, model).inc()
        for detection, hazard in zip(result.detections, hazards or [], strict=False):
            if hazard.new_hazard:  # a track this frame confirmed (the map may merge it with an entry it holds)
                self._metrics.new_hazards.labels(detection.label).inc()
        self._metrics.frames.labels("degraded" if admission.degraded else "verified", model).inc()
