"""Everything the service runs, started and stopped in one order.

Start: Redis client -> model load/compile/warm -> replay/spool recovery -> ready.
Stop: not ready -> drain in-flight inferences (bounded) -> flush kept writes and uploads -> stats -> release.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict
from enum import StrEnum

import structlog

from app.services.breakers import AsyncBreaker
from app.services.detection import DetectionService
from app.services.inference.engine import DetectionEngine
from app.services.inference.model import ModelLoadError, load_model
from app.services.metrics import Metrics
from app.services.redis_client import REDIS_FAILURES, create_redis
from app.services.sessions import SessionStore
from app.services.storage import UploadService
from app.settings import Settings

log = structlog.get_logger(__name__)
REPLAY_INTERVAL_SECONDS = 1.0


class Phase(StrEnum):
    STARTING = "starting"
    READY = "ready"
    MODEL_FAILED = "model_failed"
    SHUTTING_DOWN = "shutting_down"


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.phase = Phase.STARTING
        self.model_error: str | None = None
        self.engine: DetectionEngine | None = None
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
        self.detection = DetectionService(
            self.sessions,
            self.uploads,
            self.metrics,
            lambda: self.engine,
            settings.upload_min_confidence,
            settings.upload_min_interval_seconds,
        )
        self.metrics.watch_pool(lambda: self.engine.stats() if self.engine else None)
        self._background: list[asyncio.Task[None]] = []
        self.started_at = time.time()

    async def start(self) -> None:
        """Bring everything up; a model that fails to load is reported, not raised (liveness stays up)."""
        await self._check_redis()
        model_loaded = await self._start_model()
        # Kept writes and spooled uploads are flushed whether or not this process can detect.
        self._background.append(asyncio.create_task(self._replay_loop(), name="replay-pending-writes"))
        await self.uploads.start()
        if model_loaded and self.engine is not None:
            self.phase = Phase.READY
            info = self.engine.info
            log.info("service_ready", model=info.name, version=info.version, pool_size=self.engine.pool.size)

    async def _start_model(self) -> bool:
        try:
            self.engine = await asyncio.to_thread(self._load_engine)
            await self.engine.warm_up(self.settings.model_warmup_requests)
        except ModelLoadError as exc:
            self.phase, self.model_error = Phase.MODEL_FAILED, str(exc)
            log.error("model_load_failed", reason=str(exc))
            return False
        info = self.engine.info
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
            await self.redis.ping()
            log.info("redis_reachable", url=_redact(self.settings.redis_url))
        except REDIS_FAILURES as exc:
            mode = "fail-open: detection runs degraded" if self.settings.session_store_fail_open else "fail-closed"
            log.warning("redis_unreachable_at_start", url=_redact(self.settings.redis_url), error=str(exc), mode=mode)

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(REPLAY_INTERVAL_SECONDS)
            try:
                await self._replay_once()
            except Exception:  # one bad write must not end replay for the life of the process
                log.exception("pending_writes_replay_failed")

    async def _replay_once(self) -> None:
        if self.sessions.pending_writes:
            written = await self.sessions.replay_pending()
            if written:
                log.info("pending_writes_replayed", written=written, left=self.sessions.pending_writes)
        self.metrics.pending_writes.set(self.sessions.pending_writes)

    async def stop_after(self, starting: asyncio.Task[None]) -> None:
        """Stop, first cancelling a start that is still under way (shutdown during warm-up)."""
        if not starting.done():
            starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        await self.stop()

    async def stop(self) -> None:
        if self.phase is Phase.SHUTTING_DOWN:
            return
        self.phase = Phase.SHUTTING_DOWN
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
            pool=asdict(self.engine.stats()) if self.engine else None,
            pending_writes_left=self.sessions.pending_writes,
            pending_writes_dropped=self.sessions.pending_dropped,
            replayed=self.sessions.replayed,
            uploads=self.uploads.stats(),
        )
        self.engine = None
        await self.redis.aclose()


def _redact(url: str) -> str:
    """Drop credentials from a URL before it is logged."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
