"""The batch side of a process: the queue's Redis, job state, the result cache and, where this process works
frames, its queue consumers.

Who consumes what: a worker process (`hazard-worker`) takes live and batch frames; an API process in local
mode takes batch frames with its embedded worker (EMBEDDED_WORKER); a remote-mode API takes none, and sends
its live frames to the workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis
import structlog

from app.services.core.redis_client import REDIS_FAILURES
from app.services.detection.detectors import Detector, LocalDetector, RemoteDetector
from app.services.inference.registry import ModelRegistry
from app.services.inference.types import Priority
from app.services.jobs.cache import ResultCache
from app.services.jobs.consumers import DEQUEUE_TIMEOUT_SECONDS, QueueConsumers
from app.services.jobs.processor import FrameProcessor
from app.services.jobs.queue import FrameQueue, QueueLimits
from app.services.jobs.service import IngestLimits, JobService
from app.services.jobs.store import JobLimits, JobStore
from app.services.observability.metrics import Metrics
from app.services.sessions.store import SessionStore
from app.services.tracking.service import track_params
from app.settings import Settings
from app.wiring.process import ProcessInfo

log = structlog.get_logger(__name__)
INGEST_CHUNK_FRAMES = 20
# Longer than a blocking dequeue, so an idle consumer's BLMOVE never reads as a dead connection.
QUEUE_SOCKET_TIMEOUT_SECONDS = DEQUEUE_TIMEOUT_SECONDS + 4


@dataclass(frozen=True)
class Jobs:
    queue: FrameQueue
    service: JobService
    processor: FrameProcessor
    live_detector: Detector  # where this process's live frames are detected: here, or on the workers
    consumers: QueueConsumers | None  # None: this process takes no frames from the queue


def build_jobs(
    settings: Settings, metrics: Metrics, registry: ModelRegistry, sessions: SessionStore, process: ProcessInfo
) -> Jobs:
    s = settings
    client = redis.Redis.from_url(
        s.queue_url,
        socket_timeout=QUEUE_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=s.redis.socket_timeout_seconds,
    )
    queue = FrameQueue(
        client,
        s.fleet.name,
        QueueLimits(
            frame_timeout_seconds=s.jobs.frame_timeout_seconds,
            frame_retries=s.jobs.frame_retries,
            heartbeat_seconds=s.jobs.heartbeat_seconds,
            record_ttl_seconds=s.jobs.result_ttl_seconds,
        ),
    )
    store = JobStore(
        client, s.fleet.name, JobLimits(s.jobs.pending_bytes_limit, s.jobs.frame_ttl_seconds, s.jobs.result_ttl_seconds)
    )
    ingest = IngestLimits(s.jobs.ingest_root, s.jobs.ingest_max_files, INGEST_CHUNK_FRAMES, s.jobs.ingest_wait_seconds)
    service = JobService(store, queue, sessions, metrics, ingest)
    cache = ResultCache(client, s.jobs.result_cache_ttl_seconds, metrics)
    live_cache = cache if s.jobs.detect_cache else None
    processor = FrameProcessor(
        store,
        live=LocalDetector(registry, live_cache, Priority.INTERACTIVE),
        batch=LocalDetector(registry, cache, Priority.BATCH),  # batch frames always consult the cache
        metrics=metrics,
        batch_frame_seconds=s.jobs.frame_timeout_seconds,
        track_params=track_params(s.tracking, s.uploads),
    )
    live_detector: Detector = (
        RemoteDetector(queue)
        if s.inference_mode == "remote" and process.role == "api"
        else LocalDetector(registry, live_cache, Priority.INTERACTIVE)
    )
    return Jobs(queue, service, processor, live_detector, _build_consumers(settings, queue, processor, process))


def _build_consumers(
    settings: Settings, queue: FrameQueue, processor: FrameProcessor, process: ProcessInfo
) -> QueueConsumers | None:
    worker = process.role == "worker"
    if not (worker or (settings.inference_mode == "local" and settings.workers.embedded)):
        return None
    return QueueConsumers(
        queue,
        processor,
        process_id=process.process_id,
        batch_concurrency=settings.workers.batch_concurrency,
        live_concurrency=settings.workers.live_concurrency if worker else 0,
        sweep_seconds=settings.workers.sweep_seconds,
    )


async def start_jobs(jobs: Jobs) -> None:
    await jobs.queue.connect()
    if jobs.consumers is not None:
        await jobs.consumers.start()


async def stop_jobs(jobs: Jobs, shutdown_seconds: float) -> None:
    """The frames in hand finish (bounded); the rest stay queued for other workers."""
    if jobs.consumers is not None:
        await jobs.consumers.stop(shutdown_seconds)
    try:
        await jobs.queue.close()
    except REDIS_FAILURES as exc:  # the queue's Redis is down: nothing to close cleanly, and the stop goes on
        log.warning("queue_close_failed", error=type(exc).__name__)
