"""The batch side of a process: the queue's Redis, job state, the result cache and, where this process works
frames, its queue consumers. Built and stopped by `Runtime`; kept apart so the web-tier wiring stays short.

Who consumes what: a worker process (`hazard-worker`) takes live and batch frames; an API process in local
mode takes batch frames with its embedded worker (EMBEDDED_WORKER); a remote-mode API takes none, and sends
its live frames to the workers.
"""

from __future__ import annotations

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
from app.settings import Settings

log = structlog.get_logger(__name__)
INGEST_CHUNK_FRAMES = 20
# Longer than a blocking dequeue, so an idle consumer's BLMOVE never reads as a dead connection.
QUEUE_SOCKET_TIMEOUT_SECONDS = DEQUEUE_TIMEOUT_SECONDS + 4


class JobRuntime:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        registry: ModelRegistry,
        sessions: SessionStore,
        *,
        process_id: str,
        role: str,
    ) -> None:
        s = settings
        self._settings = settings
        self.redis = redis.Redis.from_url(
            s.queue_url,
            socket_timeout=QUEUE_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=s.redis.socket_timeout_seconds,
        )
        self.queue = FrameQueue(
            self.redis,
            s.fleet.name,
            QueueLimits(
                frame_timeout_seconds=s.jobs.frame_timeout_seconds,
                frame_retries=s.jobs.frame_retries,
                heartbeat_seconds=s.jobs.heartbeat_seconds,
                record_ttl_seconds=s.jobs.result_ttl_seconds,
            ),
        )
        store = JobStore(
            self.redis,
            s.fleet.name,
            JobLimits(s.jobs.pending_bytes_limit, s.jobs.frame_ttl_seconds, s.jobs.result_ttl_seconds),
        )
        self.service = JobService(
            store,
            self.queue,
            sessions,
            metrics,
            IngestLimits(s.jobs.ingest_root, s.jobs.ingest_max_files, INGEST_CHUNK_FRAMES, s.jobs.ingest_wait_seconds),
        )
        cache = ResultCache(self.redis, s.jobs.result_cache_ttl_seconds, metrics)
        live_cache = cache if s.jobs.detect_cache else None
        self.live_detector: Detector = (
            RemoteDetector(self.queue)
            if s.inference_mode == "remote" and role == "api"
            else LocalDetector(registry, live_cache, Priority.INTERACTIVE)
        )
        self.processor = FrameProcessor(
            store,
            live=LocalDetector(registry, live_cache, Priority.INTERACTIVE),
            batch=LocalDetector(registry, cache, Priority.BATCH),  # batch frames always consult the cache
            metrics=metrics,
            batch_frame_seconds=s.jobs.frame_timeout_seconds,
        )
        consumes = role == "worker" or (s.inference_mode == "local" and s.workers.embedded)
        self.consumers = (
            QueueConsumers(
                self.queue,
                self.processor,
                process_id=process_id,
                batch_concurrency=s.workers.batch_concurrency,
                live_concurrency=s.workers.live_concurrency if role == "worker" else 0,
                sweep_seconds=s.workers.sweep_seconds,
            )
            if consumes
            else None
        )

    async def start(self) -> None:
        await self.queue.connect()
        if self.consumers is not None:
            await self.consumers.start()

    async def stop(self) -> None:
        if self.consumers is not None:
            await self.consumers.stop(self._settings.workers.shutdown_seconds)
        try:
            await self.queue.close()
        except REDIS_FAILURES as exc:  # the queue's Redis is down: nothing to close cleanly, and the stop goes on
            log.warning("queue_close_failed", error=type(exc).__name__)
