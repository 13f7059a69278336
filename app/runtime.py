"""Builds everything the service runs and owns the order it starts and stops in.

Start: Redis client -> model load/compile/warm -> replay/spool recovery -> ready.
Stop: not ready -> drain in-flight inferences (bounded) -> flush kept writes and uploads -> stats -> release.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import asdict
from typing import cast

import structlog

from app.services.breakers import AsyncBreaker
from app.services.detection import DetectionService
from app.services.health import HealthChecks
from app.services.inference.engine import DetectionEngine
from app.services.inference.model import load_model
from app.services.inference.types import ModelLoadError
from app.services.metrics import Metrics
from app.services.redis_client import REDIS_FAILURES, create_redis, redact_url
from app.services.serving import Phase, ServingState
from app.services.sessions.pending import replay_forever
from app.services.sessions.store import SessionStore
from app.services.uploads.policy import UploadPolicy
from app.services.uploads.service import UploadService
from app.settings import Settings

log = structlog.get_logger(__name__)
REPLAY_INTERVAL_SECONDS = 1.0


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.state = ServingState()
        self.redis = create_redis(settings)
        self.redis_breaker = AsyncBreaker(
            "redis",
            fail_max=settings.breaker_fail_max,
            reset_seconds=settings.breaker_reset_seconds,
            failures=REDIS_FAILURES,
            on_change=self.metrics.set_breaker_state,
        )
        self.metrics.set_breaker_state("redis", "closed")
        self.sessions = SessionStore(
            self.redis,
            self.redis_breaker,
            default_ttl=settings.session_ttl_seconds,
            max_ttl=settings.session_max_ttl_seconds,
            ended_grace=settings.session_ended_grace_seconds,
            history_limit=settings.session_history_limit,
            rate_per_second=settings.session_rate_limit_per_second,
            rate_burst=settings.session_rate_limit_burst,
            fail_open=settings.session_store_fail_open,
            pending_limit=settings.pending_writes_limit,
            observe=lambda name, outcome, seconds: self.metrics.redis_latency.labels(name, outcome).observe(seconds),
        )
        self.uploads = UploadService(settings, self.metrics, self.sessions.set_upload_url)
        upload_policy = UploadPolicy(self.uploads, settings.upload_min_confidence, settings.upload_min_interval_seconds)
        self.detection = DetectionService(self.sessions, upload_policy, self.metrics, self.state)
        self.health = HealthChecks(self.state, self.sessions, self.uploads, fail_open=settings.session_store_fail_open)
        self.metrics.watch_pool(lambda: self.state.engine.stats() if self.state.engine else None)
        self._background: list[asyncio.Task[None]] = []
        self.started_at = time.time()

    async def start(self) -> None:
        """Bring everything up; a model that fails to load is reported, not raised (liveness stays up)."""
        await self._check_redis()
        model_loaded = await self._start_model()
        # Kept writes and spooled uploads are flushed whether or not this process can detect.
        replay = replay_forever(self.sessions.replay_pending, self.sessions.pending, REPLAY_INTERVAL_SECONDS)
        self._background.append(asyncio.create_task(replay, name="replay-pending-writes"))
        await self.uploads.start()
        engine = self.state.engine
        if model_loaded and engine is not None:
            self.state.phase = Phase.READY
            log.info("service_ready", model=engine.info.name, version=engine.info.version, pool_size=engine.pool.size)

    async def _start_model(self) -> bool:
        try:
            engine = await asyncio.to_thread(self._load_engine)
            await engine.warm_up(self.settings.model_warmup_requests)
        except ModelLoadError as exc:
            self.state.phase, self.state.model_error = Phase.MODEL_FAILED, str(exc)
            log.error("model_load_failed", reason=str(exc))
            return False
        self.state.engine = engine
        info = engine.info
        self.metrics.model_info.info(
            {
                "name": info.name,
                "version": info.version,
                "input_size": f"{info.input_width}x{info.input_height}",
                "device": info.device,
                "output_format": info.output_format.value,
            }
        )
        self.metrics.model_ready.set(1)
        return True

    def _load_engine(self) -> DetectionEngine:
        s = self.settings
        model = load_model(
            s.model_dir,
            device=s.model_device,
            performance_hint=s.model_performance_hint,
            inference_threads=s.model_inference_threads,
        )
        pool_size = s.model_max_concurrent or model.optimal_requests
        log.info("model_compiled", model=model.info.name, optimal_requests=model.optimal_requests, pool_size=pool_size)
        return DetectionEngine(model, pool_size, s.max_request_queue_size, s.max_image_pixels)

    async def _check_redis(self) -> None:
        try:
            await cast(Awaitable[bool], self.redis.ping())
            log.info("redis_reachable", url=redact_url(self.settings.redis_url))
        except REDIS_FAILURES as exc:
            mode = "fail-open: detection runs degraded" if self.settings.session_store_fail_open else "fail-closed"
            log.warning(
                "redis_unreachable_at_start", url=redact_url(self.settings.redis_url), error=str(exc), mode=mode
            )

    async def stop_after(self, starting: asyncio.Task[None]) -> None:
        """Stop, first cancelling a start that is still under way (shutdown during warm-up)."""
        if not starting.done():
            starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        await self.stop()

    async def stop(self) -> None:
        if self.state.phase is Phase.SHUTTING_DOWN:
            return
        self.state.phase = Phase.SHUTTING_DOWN
        self.detection.refuse_new_frames()
        if not await self.detection.wait_idle(self.settings.shutdown_drain_seconds):
            log.warning("drain_timed_out", in_flight=self.detection.in_flight)
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self.sessions.replay_pending()
        await self.uploads.stop(self.settings.upload_flush_seconds)
        log.info(
            "shutdown_stats",
            uptime_s=round(time.time() - self.started_at, 1),
            pool=asdict(self.state.engine.stats()) if self.state.engine else None,
            pending_writes_left=len(self.sessions.pending),
            pending_writes_dropped=self.sessions.pending.dropped,
            replayed=self.sessions.pending.replayed,
            uploads=self.uploads.stats(),
        )
        self.state.engine = None
        await self.redis.aclose()
