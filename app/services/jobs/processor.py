"""The worker side of the queue: what a SAQ worker runs for one live frame and for one batch frame.

A batch frame is taken from its job (dropped if the job was cancelled or has expired), answered from the
result cache or the engine, and recorded once by frame id. Errors a retry cannot fix (an undecodable image,
too many pixels, an unknown model) are recorded as the frame's failure at once; transient ones (deadline,
a full pool, a model still loading, a stop under way) are raised so SAQ retries the frame, until its last
attempt, whose failure is recorded so the job still finishes. A done frame's detections are tracked into the
job's hazards before it is recorded (atomic per job, as a session's frames are), so each carries its hazard id.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import structlog
from saq.types import Context

from app.services.core.asyncio_tasks import InFlight
from app.services.core.errors import (
    ApiError,
    DeadlineExceeded,
    FrameExpired,
    ModelNotLoaded,
    ModelNotReady,
    Overloaded,
    ShuttingDown,
)
from app.services.detection.detectors import Detector
from app.services.inference.codec import detection_json, result_json
from app.services.inference.types import DetectionResult, DetectOptions, ModelInfo
from app.services.jobs.frames import tracked_job_frame
from app.services.jobs.queue import error_json
from app.services.jobs.store import ClaimedFrame, JobStore, frame_id
from app.services.observability.metrics import Metrics
from app.services.observability.tracing import consumer_span
from app.services.tracking.types import Assignment, TrackParams

log = structlog.get_logger(__name__)
TRANSIENT = (DeadlineExceeded, Overloaded, ModelNotReady, ModelNotLoaded, ShuttingDown)


class FrameProcessor:
    def __init__(
        self,
        store: JobStore,
        live: Detector,
        batch: Detector,
        metrics: Metrics,
        *,
        batch_frame_seconds: float,
        track_params: TrackParams,
    ) -> None:
        self._store = store
        self._live = live
        self._batch = batch
        self._metrics = metrics
        self._batch_frame_seconds = batch_frame_seconds
        self._track_params = track_params
        self.in_hand = InFlight()  # frames running now: a stop waits for exactly those
        self.calls = 0  # frames handed to this processor, whatever became of them

    async def live_frame(
        self, ctx: Context, *, frame: str, options: dict[str, Any], model: str | None, deadline: float
    ) -> dict[str, Any]:
        """A remote-mode API process's frame; the answer (or the typed error) goes back through the queue."""
        with consumer_span("live_frame", _trace_carrier(ctx)):
            return await self._live_frame(ctx, frame=frame, options=options, model=model, deadline=deadline)

    async def _live_frame(
        self, ctx: Context, *, frame: str, options: dict[str, Any], model: str | None, deadline: float
    ) -> dict[str, Any]:
        self.calls += 1
        self._observe_wait(ctx, "interactive")
        remaining = deadline - time.time()
        try:
            if remaining <= 0:  # it waited in the queue past its deadline: nobody is listening any more
                raise DeadlineExceeded(details={"waited_in": "queue"})
            with self.in_hand.hold():
                result, info = await self._live.bind(model).detect(
                    base64.b64decode(frame), DetectOptions(**options), time.monotonic() + remaining
                )
        except ApiError as exc:
            self._metrics.queued_frames.labels("interactive", exc.code.lower()).inc()
            return {"error": error_json(exc)}
        self._metrics.queued_frames.labels("interactive", "done").inc()
        return {"result": result_json(result, info)}

    async def batch_frame(
        self, ctx: Context, *, job_id: str, index: int, options: dict[str, Any], model: str | None
    ) -> str:
        with consumer_span("batch_frame", _trace_carrier(ctx), job_id=job_id, index=index):
            return await self._batch_frame(ctx, job_id=job_id, index=index, options=options, model=model)

    async def _batch_frame(
        self, ctx: Context, *, job_id: str, index: int, options: dict[str, Any], model: str | None
    ) -> str:
        self.calls += 1
        self._observe_wait(ctx, "batch")
        claimed = await self._store.claim(job_id, index)
        base = {"frame_id": frame_id(index), "index": index, "meta": claimed.meta}
        if claimed.state == "expired":  # recorded, so the job can still finish
            await self._finish(job_id, index, {**base, **failed_json(FrameExpired())}, failed=True)
            return "failed"
        if claimed.state != "run":  # cancelled, the job gone, or a retry of a frame already recorded
            await self._store.release_bytes(claimed.released_bytes)
            self._metrics.queued_frames.labels("batch", claimed.state).inc()
            return claimed.state
        try:
            with self.in_hand.hold():
                detector = self._batch.bind(model)
                result, info = await detector.detect(
                    claimed.data, DetectOptions(**options), time.monotonic() + self._batch_frame_seconds
                )
        except ApiError as exc:
            if isinstance(exc, TRANSIENT) and not _last_attempt(ctx):
                self._metrics.queued_frames.labels("batch", "retried").inc()
                raise
            await self._finish(job_id, index, {**base, **failed_json(exc)}, failed=True)
            return "failed"
        hazards = await self._track(job_id, index, claimed, result, info.name)
        await self._finish(job_id, index, {**base, **done_json(result, info, hazards)}, failed=False, result=result)
        return "done"

    async def _track(
        self, job_id: str, index: int, claimed: ClaimedFrame, result: DetectionResult, model: str
    ) -> list[Assignment]:
        if not result.detections:
            return []  # nothing to associate; stale tracks are closed by the next frame's time
        size = (result.width, result.height)
        frame, min_hits = tracked_job_frame(
            claimed.job_created_at,
            index,
            claimed.meta or {},
            claimed.meta_before,
            result.detections,
            model,
            self._track_params.min_hits,
            size,
        )
        return await self._store.track(job_id, frame, replace(self._track_params, min_hits=min_hits))

    async def _finish(
        self, job_id: str, index: int, item: dict[str, Any], *, failed: bool, result: DetectionResult | None = None
    ) -> None:
        cached = result is not None and result.cached
        detections = len(result.detections) if result is not None else 0
        written, status = await self._store.record(
            job_id, index, item, failed=failed, cached=cached, detections=detections
        )
        outcome = "failed" if failed else "cached" if cached else "done"
        self._metrics.queued_frames.labels("batch", outcome if written else "duplicate").inc()
        if written and status in ("completed", "failed"):
            self._metrics.jobs.labels(status).inc()
            log.info("job_finished", job_id=job_id, status=status)

    def _observe_wait(self, ctx: Context, priority: str) -> None:
        job = ctx.get("job")
        if job is not None and job.queued:
            self._metrics.queue_wait.labels(priority).observe(max(0.0, time.time() - job.queued / 1000))


def done_json(result: DetectionResult, model: ModelInfo, hazards: Sequence[Assignment] = ()) -> dict[str, Any]:
    """`hazards`: each detection's hazard, in order; none when tracking answered nothing (a retried update)."""
    detections = [detection_json(d) for d in result.detections]
    for detection, hazard in zip(detections, hazards, strict=False):
        detection.update(hazard_id=hazard.hazard_id, new_hazard=hazard.new_hazard)
    return {
        "status": "done",
        "cached": result.cached,
        "detections": detections,
        "image": {"width": result.width, "height": result.height},
        "model": {"name": model.name, "version": model.version},
        "timings_ms": result.timings_ms,
        "error": None,
    }


def failed_json(error: ApiError) -> dict[str, Any]:
    return {
        "status": "failed",
        "cached": False,
        "detections": [],
        "image": None,
        "model": None,
        "timings_ms": {},
        "error": {"code": error.code, "message": error.message},
    }


def _trace_carrier(ctx: Context) -> dict[str, Any] | None:
    """The producer's `traceparent` (app/services/jobs/queue.py puts it in the job's meta)."""
    job = ctx.get("job")
    return job.meta if job is not None else None


def _last_attempt(ctx: Context) -> bool:
    job = ctx.get("job")
    return job is None or job.attempts >= job.retries
