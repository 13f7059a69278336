"""The API side of batch jobs: create, add frames (all of a call's or none), close, cancel, read results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from app.services.core.asyncio_tasks import gather_bounded
from app.services.core.errors import (
    ApiError,
    Backpressure,
    IngestDisabled,
    IngestRefused,
    JobNotFound,
)
from app.services.core.redis_client import REDIS_FAILURES
from app.services.identity.principal import LOCAL_TENANT
from app.services.inference.codec import detection_from_json
from app.services.inference.types import DetectOptions
from app.services.jobs.frames import tracked_job_frame
from app.services.jobs.processor import failed_json
from app.services.jobs.queue import FrameQueue, queue_errors, queue_unavailable
from app.services.jobs.store import JobStore, NewFrame, frame_id
from app.services.observability.metrics import Metrics
from app.services.sessions.store import SessionStore
from app.services.tracking import geojson
from app.services.tracking.matcher import Tracker
from app.services.tracking.types import TrackParams

log = structlog.get_logger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
RESULTS_PAGE = 200
ENQUEUES_AT_ONCE = 8  # a call's frames go to the queue over this many connections, not one each


@dataclass(frozen=True)
class BatchOptions:
    detect: DetectOptions
    model: str | None


@dataclass(frozen=True)
class IngestLimits:
    root: Path | None  # None: server-side ingestion is off
    max_files: int
    chunk_frames: int
    wait_seconds: float  # how long one call waits out backpressure before answering 429


class JobService:
    def __init__(
        self, store: JobStore, queue: FrameQueue, sessions: SessionStore, metrics: Metrics, ingest: IngestLimits
    ) -> None:
        self._store = store
        self._queue = queue
        self._sessions = sessions
        self._metrics = metrics
        self._ingest = ingest

    async def create(
        self, name: str | None, session_id: str | None, options: BatchOptions, tenant: str = LOCAL_TENANT
    ) -> dict[str, Any]:
        """A job of `tenant`'s; its session, if named, must be one of `tenant`'s too."""
        if session_id is not None:
            await self._sessions.get(session_id, tenant)  # 404 for an unknown session, before anything is written
        stored = {"conf": options.detect.conf, "iou": options.detect.iou, "max_det": options.detect.max_det}
        with queue_errors():
            job_id = await self._store.create(name, session_id, {**stored, "model": options.model}, tenant)
        self._metrics.jobs.labels("created").inc()
        log.info("job_created", job_id=job_id)
        return await self.status(job_id)

    async def add_frames(self, job_id: str, frames: list[NewFrame], owner: str | None = None) -> list[str]:
        """`owner` (on every call that names a job): the tenant that must own it, None for any; another
        tenant's job answers JOB_NOT_FOUND exactly as an unknown one does."""
        self._store.checked_id(job_id)
        with queue_errors():
            job = _owned(job_id, await self._store.get(job_id), owner)  # a job's tenant never changes
            indexes = await self._store.add_frames(job_id, frames)
        options = job["options"]
        detect = DetectOptions(options["conf"], options["iou"], options["max_det"])
        try:
            enqueues = (self._queue.enqueue_batch(job_id, i, detect, options["model"]) for i in indexes)
            await gather_bounded(enqueues, ENQUEUES_AT_ONCE)
        except REDIS_FAILURES as exc:
            # The frames are stored but some may not be queued: record them failed so the job can still finish.
            unavailable = queue_unavailable(exc)
            for index, frame in zip(indexes, frames, strict=True):
                item = {"frame_id": frame_id(index), "index": index, "meta": frame.meta, **failed_json(unavailable)}
                await self._store.record(job_id, index, item, failed=True, cached=False, detections=0)
            raise unavailable from exc
        return [frame_id(i) for i in indexes]

    async def close(self, job_id: str, owner: str | None = None) -> dict[str, Any]:
        self._store.checked_id(job_id)
        with queue_errors():
            status = await self._store.close(job_id, owner)
        if status in ("completed", "failed"):
            self._metrics.jobs.labels(status).inc()
        return await self.status(job_id)

    async def cancel(self, job_id: str, owner: str | None = None) -> dict[str, Any]:
        self._store.checked_id(job_id)
        with queue_errors():
            await self._store.cancel(job_id, owner)
        self._metrics.jobs.labels("cancelled").inc()
        log.info("job_cancelled", job_id=job_id)
        return await self.status(job_id)

    async def status(self, job_id: str, owner: str | None = None) -> dict[str, Any]:
        self._store.checked_id(job_id)
        with queue_errors():
            job = _owned(job_id, await self._store.get(job_id), owner)
        job["model"] = job["options"].pop("model")
        return job

    async def results(
        self, job_id: str, offset: int, limit: int, owner: str | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        job = await self.status(job_id, owner)
        with queue_errors():
            return job, await self._store.results(job_id, offset, limit)

    async def iter_results(self, job_id: str, owner: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every finished frame's result in frame order, a page at a time (for the streamed JSON Lines)."""
        job = await self.status(job_id, owner)
        for offset in range(0, job["total"], RESULTS_PAGE):
            for item in await self._store.results(job_id, offset, RESULTS_PAGE):
                yield item

    async def hazards(self, job_id: str, params: TrackParams, owner: str | None = None) -> dict[str, Any]:
        """The job's done frames tracked in frame order (as one camera's sequence), as GeoJSON (`frames.py` times
        them)."""
        job = await self.status(job_id, owner)
        tracker = Tracker(params)
        before: tuple[int, dict[str, Any]] | None = None  # the frame before: how far apart they were taken
        async for item in self.iter_results(job_id, owner):
            index, meta = item["index"], item.get("meta") or {}
            meta_before = before[1] if before is not None and before[0] == index - 1 else None
            before = index, meta
            if item["status"] != "done":
                continue
            detections = [detection_from_json(d) for d in item["detections"]]
            image = item.get("image")
            size = (image["width"], image["height"]) if image else None
            frame, min_hits = tracked_job_frame(
                job["created_at"], index, meta, meta_before, detections, item["model"]["name"], params.min_hits, size
            )
            tracker.update(frame, min_hits=min_hits)
        return geojson.job_collection(job_id, tracker.hazards())

    async def recent(self, limit: int, tenant: str | None = None) -> list[dict[str, Any]]:
        """Newest first: `tenant`'s jobs, or every tenant's (None)."""
        with queue_errors():
            ids = await self._store.recent(limit, tenant)
        jobs = []
        for job_id in ids:
            try:
                jobs.append(await self.status(job_id))
            except ApiError:  # expired since it was listed
                continue
        return jobs

    async def queue_depth(self) -> dict[str, int]:
        with queue_errors():
            depth = await self._queue.depth()
        for priority, waiting in depth.items():
            self._metrics.queue_depth.labels(priority).set(waiting)
        return depth

    async def ingest_dir(self, job_id: str, path: str, owner: str | None = None) -> list[str]:
        """Queue every image below `path` (sorted, recursive); `path` must lie inside INGEST_ROOT, links resolved."""
        await self.status(job_id, owner)  # another tenant's job is refused before the directory is read
        base, files = self._ingest_files(path)
        accepted: list[str] = []
        chunk = self._ingest.chunk_frames
        for start in range(0, len(files), chunk):
            frames = [
                NewFrame(f.read_bytes(), {"filename": str(f.relative_to(base))}) for f in files[start : start + chunk]
            ]
            accepted += await self._add_waiting(job_id, frames, owner)
        return accepted

    async def _add_waiting(self, job_id: str, frames: list[NewFrame], owner: str | None) -> list[str]:
        """Add one chunk, waiting out backpressure for up to INGEST_WAIT_SECONDS."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._ingest.wait_seconds
        while True:
            try:
                return await self.add_frames(job_id, frames, owner)
            except Backpressure as exc:
                if loop.time() + (exc.retry_after or 1) > give_up_at:
                    raise
                await asyncio.sleep(exc.retry_after or 1)  # the server's own pacing, not a test wait

    def _ingest_files(self, path: str) -> tuple[Path, list[Path]]:
        root = self._ingest.root
        if root is None:
            raise IngestDisabled
        base = root.resolve()
        try:
            target = (base / path).resolve(strict=True)
        except (OSError, RuntimeError):
            raise IngestRefused("No such directory below the ingestion root.", details={"path": path}) from None
        if not target.is_relative_to(base):
            raise IngestRefused(details={"path": path})
        if not target.is_dir():
            raise IngestRefused("Not a directory.", details={"path": path})
        files = sorted(
            f
            for f in target.rglob("*")
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() and f.resolve().is_relative_to(base)
        )
        if len(files) > self._ingest.max_files:
            raise IngestRefused(
                "Too many files in one ingestion.", details={"files": len(files), "max": self._ingest.max_files}
            )
        return base, files


def _owned(job_id: str, job: dict[str, Any], owner: str | None) -> dict[str, Any]:
    if owner is not None and job["tenant"] != owner:
        raise JobNotFound(details={"job_id": job_id})  # what an unknown id answers: no existence oracle
    return job
