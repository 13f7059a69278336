"""Builds everything the service runs and owns the order it starts and stops in.

Start: Redis client -> model load/compile/warm -> replay/spool recovery -> ready.
Stop: not ready -> drain in-flight inferences (bounded) -> flush kept writes and uploads -> stats -> release.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, cast

import structlog
from pydantic import SecretStr

from app import __version__
from app.services.core.asyncio_tasks import cancel, cancel_all
from app.services.core.breakers import AsyncBreaker
from app.services.core.errors import ApiError
from app.services.core.redis_client import REDIS_BREAKER_FAILURES, REDIS_FAILURES, create_redis, redact_url
from app.services.core.serving import Phase, ServingState
from app.services.detection.detectors import EngineCall
from app.services.detection.service import DetectionService
from app.services.fleet.agent import FleetAgent, FleetControl, new_process_id
from app.services.fleet.model_control import ModelControl
from app.services.identity.operators import OperatorAuth
from app.services.inference.probe import Probe
from app.services.inference.registry import ModelRegistry
from app.services.inference.types import ModelLoadError, Priority
from app.services.observability.health import HealthChecks
from app.services.observability.memory import rss_mb
from app.services.observability.metrics import Metrics
from app.services.sessions.admission import CreationBudget, CreationLimits, FrameRateLimit
from app.services.sessions.counting import ActiveSessions
from app.services.sessions.guarded import GuardedRedis
from app.services.sessions.ledger import UploadLedger
from app.services.sessions.metadata import MetadataLimits
from app.services.sessions.store import SessionLimits, SessionStore
from app.services.sessions.write_behind import PendingWrites, Replayer
from app.services.tracking.service import create_tracking
from app.services.uploads.policy import UploadPolicy
from app.services.uploads.service import create_upload_service
from app.settings import Settings
from app.wiring.jobs import JobRuntime

if TYPE_CHECKING:  # the engine imports OpenVINO, which only a process that holds a model loads
    from app.services.inference.engine import DetectionEngine

log = structlog.get_logger(__name__)
REPLAY_INTERVAL_SECONDS = 1.0
PENDING_WRITES_FILE = "pending-writes.jsonl"  # beside the upload spool unless PENDING_WRITES_FILE says otherwise


class Runtime:
    def __init__(self, settings: Settings, metrics: Metrics | None = None, role: str = "api") -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.state = ServingState()
        self.redis = create_redis(settings)
        self.redis_breaker = AsyncBreaker(
            "redis",
            fail_max=settings.breaker_fail_max,
            reset_seconds=settings.breaker_reset_seconds,
            failures=REDIS_BREAKER_FAILURES,  # an OOM refusal is Redis answering: reads it can serve go on
            on_change=self.metrics.set_breaker_state,
        )
        self.metrics.set_breaker_state("redis", "closed")
        session_redis = GuardedRedis(self.redis, self.redis_breaker, self._observe_redis)
        self.pending_writes = PendingWrites(
            settings.pending_writes_limit, settings.pending_writes_file or settings.spool_dir / PENDING_WRITES_FILE
        )
        self.active_sessions = ActiveSessions(session_redis, settings.active_sessions_refresh_seconds)
        self.sessions = SessionStore(
            session_redis,
            _session_limits(settings),
            CreationBudget(session_redis, _creation_limits(settings)),
            self.pending_writes,
            self.active_sessions,
            fail_open=settings.session_store_fail_open,
        )
        self.tracking = create_tracking(settings, self.redis, self.redis_breaker, self.sessions, self._observe_redis)
        # Built last: it replays through the store and the tracking service, which both exist by now.
        self.replayer = Replayer(self.pending_writes, self.sessions.write_kept, self.tracking.apply)
        ledger = UploadLedger(session_redis)
        record_upload = self.tracking.recording_uploads(ledger.record)  # + the map's best frames
        self.uploads = create_upload_service(settings, self.metrics, record_upload)
        self.probe = Probe()
        self.registry = ModelRegistry(
            settings.model_repository,
            settings.model_dir,
            self._build_engine,
            self._verify_engine,
            memory_limit_mb=settings.model_memory_limit_mb,
            drain_seconds=settings.model_drain_seconds,
        )
        self.registry.on_change = self._model_changed
        upload_policy = UploadPolicy(
            self.uploads,
            settings.upload_min_confidence,
            settings.upload_min_interval_seconds,
            per_hazard=settings.upload_per_hazard,
        )
        self.process_id = new_process_id(role)
        self.holds_models = role == "worker" or settings.inference_mode == "local"
        self.jobs = JobRuntime(
            settings, self.metrics, self.registry, self.sessions, process_id=self.process_id, role=role
        )
        self.detection = DetectionService(
            self.sessions, upload_policy, self.metrics, self.jobs.live_detector, self.tracking
        )
        self.health = HealthChecks(
            self.state,
            self.registry,
            self.sessions,
            self.uploads,
            self.probe,
            self.jobs.live_detector,
            holds_models=self.holds_models,
            fail_open=settings.session_store_fail_open,
            deep_cache_seconds=settings.health_deep_cache_seconds,
        )
        self.metrics.watch_pool(lambda: self.registry.active_engine.stats() if self.registry.active_engine else None)
        fleet = FleetControl(self.redis, settings.fleet_name, settings.fleet_heartbeat_seconds)
        self.fleet = FleetAgent(
            fleet,
            self.registry,
            self._describe,
            process_id=self.process_id,
            holds_models=self.holds_models,
            heartbeat_seconds=settings.fleet_heartbeat_seconds,
            poll_seconds=settings.fleet_poll_seconds,
        )
        self.model_control = ModelControl(self.registry, fleet, local=self.holds_models)
        self.auth = OperatorAuth(
            self.redis,
            namespace=settings.fleet_name,
            environment=settings.environment,
            password_hash=_secret(settings.admin_password_hash),
            password=_secret(settings.admin_password),
            token=_secret(settings.admin_token),
            max_failures=settings.admin_login_max_failures,
            window_seconds=settings.admin_login_window_seconds,
        )
        self.role = role
        self._background: list[asyncio.Task[None]] = []
        self.started_at = time.time()

    def _observe_redis(self, name: str, outcome: str, seconds: float) -> None:
        self.metrics.redis_latency.labels(name, outcome).observe(seconds)

    async def start(self) -> None:
        """Bring everything up; a model that fails to load is reported, not raised (liveness stays up)."""
        await self._check_redis()
        self.registry.discover()
        await self.fleet.start()  # converges to the fleet's desired model state when Redis answers
        if self.holds_models:
            await self._ensure_active_model()
        # Kept writes and spooled uploads are flushed whether or not this process can detect.
        loaded = await asyncio.to_thread(self.pending_writes.load)  # saved by a stop while Redis was down
        if loaded:
            log.info("pending_writes_loaded", count=loaded)
        replay = self.replayer.run_forever(REPLAY_INTERVAL_SECONDS)
        self._background.append(asyncio.create_task(replay, name="replay-pending-writes"))
        if self.role == "api":  # only API processes annotate frames; a worker must not take their spool
            await self.uploads.start()
        await self.jobs.start()
        engine = self.registry.active_engine
        if engine is not None:
            self.state.phase = Phase.READY
            log.info("service_ready", model=engine.info.name, version=engine.info.version, pool_size=engine.pool.size)
        elif not self.holds_models:
            self.state.phase = Phase.READY
            log.info("service_ready", inference_mode="remote")

    async def _ensure_active_model(self) -> None:
        """Without a fleet decision (Redis down, or its version failed here), serve MODEL_DIR's version."""
        if self.registry.active is not None:
            return
        try:
            await self.registry.activate(self.registry.default_version)
        except (ModelLoadError, ApiError) as exc:  # broken files, or no memory left for it
            reason = str(exc) if isinstance(exc, ModelLoadError) else f"{exc.message} {exc.details}"
            self.state.phase, self.state.model_error = Phase.MODEL_FAILED, reason

    def _build_engine(self, path: Path, name: str) -> DetectionEngine:
        """Read and compile one version (blocking: the registry runs it in a thread)."""
        from app.services.inference.engine import DetectionEngine  # imported here: see TYPE_CHECKING above
        from app.services.inference.model import load_model

        s = self.settings
        model = load_model(
            path,
            device=s.model_device,
            performance_hint=s.model_performance_hint or ("ADAPTIVE" if self.role == "api" else "THROUGHPUT"),
            inference_threads=s.model_inference_threads,
            inference_precision=s.model_inference_precision,
            cache_dir=s.model_cache_dir,
            name=name,
        )
        pool_size = s.model_max_concurrent or model.optimal_requests
        log.info(
            "model_compiled",
            model=name,
            optimal_requests=model.optimal_requests,
            pool_size=pool_size,
            precision=model.precision,
        )
        return DetectionEngine(
            model,
            pool_size,
            s.max_request_queue_size,
            s.max_image_pixels,
            s.max_decode_pixels,
            batch_in_live_gaps=self.role == "api",
            latency_budget=s.live_latency_budget_seconds,
        )

    async def _verify_engine(self, engine: DetectionEngine) -> None:
        """Warm it, then prove it on the probe frame before it may serve."""
        await engine.warm_up(self.settings.model_warmup_requests)
        result, _ = await self.probe.run(EngineCall(engine, None, Priority.INTERACTIVE))
        if not result.ok:
            raise ModelLoadError(
                f"{engine.info.name} failed the probe frame: expected {result.expected_labels}, "
                f"found {result.found_labels}"
            )

    def _model_changed(self) -> None:
        engine = self.registry.active_engine
        active = (
            {
                "name": engine.info.name,
                "version": engine.info.version,
                "input_size": f"{engine.info.input_width}x{engine.info.input_height}",
                "device": engine.info.device,
                "precision": engine.precision,
                "output_format": engine.info.output_format.value,
            }
            if engine is not None
            else None
        )
        self.metrics.set_model_states({v["name"]: v["state"] for v in self.registry.describe()}, active)
        if engine is not None and self.state.phase is Phase.MODEL_FAILED:
            self.state.phase, self.state.model_error = Phase.READY, None  # an operator fixed it by activating

    def _describe(self) -> dict[str, object]:
        """This process in its heartbeat (the registry adds its models)."""
        engine = self.registry.active_engine
        return {
            "role": self.role,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "code_version": __version__,
            "started_at": self.started_at,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "phase": self.state.phase.value,
            "rss_mb": round(rss_mb(), 1),
            "memory_limit_mb": self.settings.model_memory_limit_mb,
            "pool": asdict(engine.stats()) if engine is not None else None,
            "in_flight": self.detection.in_flight,
            "breakers": {"redis": self.redis_breaker.state, self.uploads.breaker.name: self.uploads.breaker.state},
            "upload_spool": self.uploads.spooled,
        }

    async def _check_redis(self) -> None:
        try:
            await cast(Awaitable[bool], self.redis.ping())
            log.info("redis_reachable", url=redact_url(self.settings.redis_url), mode=self.settings.redis_mode)
        except REDIS_FAILURES as exc:
            mode = "fail-open: detection runs degraded" if self.settings.session_store_fail_open else "fail-closed"
            log.warning(
                "redis_unreachable_at_start", url=redact_url(self.settings.redis_url), error=str(exc), mode=mode
            )

    async def stop_after(self, starting: asyncio.Task[None]) -> None:
        """Stop, first cancelling a start that is still under way (shutdown during warm-up)."""
        if not starting.done():
            await cancel(starting)
        elif not starting.cancelled() and starting.exception() is not None:
            log.error("start_failed", error=repr(starting.exception()))
        await self.stop()

    async def stop(self) -> None:
        if self.state.phase is Phase.SHUTTING_DOWN:
            return
        self.state.phase = Phase.SHUTTING_DOWN
        self.detection.refuse_new_frames()
        await self.jobs.stop()  # the frames in hand finish; the rest stay queued for other workers
        if not await self.detection.wait_idle(self.settings.shutdown_drain_seconds):
            log.warning("drain_timed_out", in_flight=self.detection.in_flight)
        await self.fleet.stop()
        await cancel_all(self._background)
        with contextlib.suppress(Exception):
            await self.replayer.replay()
        try:  # what Redis could not take survives the stop: the next start replays it
            saved = await asyncio.to_thread(self.pending_writes.save)
        except OSError as exc:
            saved = 0
            log.error("pending_writes_not_saved", count=len(self.pending_writes), error=str(exc))
        if self.role == "api":
            await self.uploads.stop(self.settings.upload_flush_seconds)
        log.info(
            "shutdown_stats",
            uptime_s=round(time.time() - self.started_at, 1),
            pool=asdict(self.registry.active_engine.stats()) if self.registry.active_engine else None,
            pending_writes_left=len(self.pending_writes),
            pending_writes_dropped=self.pending_writes.dropped,
            pending_writes_discarded=self.pending_writes.discarded,
            pending_writes_saved=saved,
            replayed=self.pending_writes.replayed,
            uploads=self.uploads.stats(),
        )
        self.registry.release_all()
        await self.redis.aclose()


def _session_limits(settings: Settings) -> SessionLimits:
    return SessionLimits(
        default_ttl=settings.session_ttl_seconds,
        max_ttl=settings.session_max_ttl_seconds,
        ended_grace=settings.session_ended_grace_seconds,
        history_limit=settings.session_history_limit,
        frame_rate=FrameRateLimit(settings.session_rate_limit_per_second, settings.session_rate_limit_burst),
        metadata=MetadataLimits(
            max_bytes=settings.session_metadata_max_bytes,
            max_depth=settings.session_metadata_max_depth,
            max_keys=settings.session_metadata_max_keys,
        ),
    )


def _creation_limits(settings: Settings) -> CreationLimits:
    return CreationLimits(
        per_minute=settings.session_create_rate_per_minute,
        burst=settings.session_create_burst,
        ttl_budget_seconds=settings.session_create_ttl_budget_seconds,
        namespace=settings.fleet_name,
    )


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
