"""The order a process starts and stops in, one named step per line.

Start: check Redis -> discover models -> fleet -> model -> load kept writes -> replay task -> hazard registry
(migrate, feed) -> uploads (API) -> jobs -> ready. A model that fails to load is reported, not raised: liveness
stays up and the phase says why. A registry that is down is reported too (degraded) and retried.
Stop mirrors it: not ready -> jobs -> drain in-flight frames (bounded) -> fleet -> replay task -> save kept writes
-> uploads (API) -> hazard registry (last flush, engine disposed) -> stats -> release models and Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import asdict
from typing import cast

import structlog

from app.services.core.asyncio_tasks import cancel, cancel_all
from app.services.core.errors import ApiError
from app.services.core.redis_client import REDIS_FAILURES, redact_url
from app.services.core.serving import Phase
from app.services.inference.types import ModelLoadError
from app.services.registry.feed import ReadEntry
from app.wiring.jobs import start_jobs, stop_jobs
from app.wiring.parts import Parts
from app.wiring.registry import map_entry_reader, start_registry, stop_registry

log = structlog.get_logger(__name__)
REPLAY_INTERVAL_SECONDS = 1.0


class Lifecycle:
    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self._background: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        parts = self._parts
        await self._check_redis()
        parts.models.registry.discover()
        await parts.fleet.agent.start()  # converges to the fleet's desired model state when Redis answers
        if parts.process.holds_models:
            await self._ensure_active_model()
        await self._load_kept_writes()  # kept writes and spooled uploads are flushed whether or not it detects
        self._start_replay()
        await start_registry(parts.registry, self._read_map_entry())
        if parts.process.role == "api":  # only API processes annotate frames; a worker must not take their spool
            await parts.uploads.service.start()
        await start_jobs(parts.jobs)
        self._mark_ready()

    async def stop_after(self, starting: asyncio.Task[None]) -> None:
        """Stop, first cancelling a start that is still under way (shutdown during warm-up)."""
        if not starting.done():
            await cancel(starting)
        elif not starting.cancelled() and starting.exception() is not None:
            log.error("start_failed", error=repr(starting.exception()))
        await self.stop()

    async def stop(self) -> None:
        parts = self._parts
        if parts.serving.phase is Phase.SHUTTING_DOWN:
            return
        self._refuse_new_frames()
        await stop_jobs(parts.jobs, parts.settings.workers.shutdown_seconds)  # the frames in hand finish
        await self._drain_frames()
        await parts.fleet.agent.stop()
        await self._stop_replay()
        saved = await self._save_kept_writes()
        if parts.process.role == "api":
            await parts.uploads.service.stop(parts.settings.uploads.flush_seconds)
        await stop_registry(parts.registry, self._read_map_entry())
        self._log_shutdown_stats(saved)
        parts.models.release_all()
        await parts.redis.client.aclose()

    def _read_map_entry(self) -> ReadEntry:
        return map_entry_reader(self._parts.tracking, self._parts.settings.tracking.merge_meters)

    # Start steps

    async def _check_redis(self) -> None:
        settings = self._parts.settings
        try:
            await cast(Awaitable[bool], self._parts.redis.client.ping())
            log.info("redis_reachable", url=redact_url(settings.redis.url), mode=settings.redis.mode)
        except REDIS_FAILURES as exc:
            mode = "fail-open: detection runs degraded" if settings.sessions.store_fail_open else "fail-closed"
            log.warning("redis_unreachable_at_start", url=redact_url(settings.redis.url), error=str(exc), mode=mode)

    async def _ensure_active_model(self) -> None:
        """Without a fleet decision (Redis down, or its version failed here), serve MODEL_DIR's version."""
        registry, serving = self._parts.models.registry, self._parts.serving
        if registry.active is not None:
            return
        try:
            await registry.activate(registry.default_version)
        except (ModelLoadError, ApiError) as exc:  # broken files, or no memory left for it
            reason = str(exc) if isinstance(exc, ModelLoadError) else f"{exc.message} {exc.details}"
            serving.phase, serving.model_error = Phase.MODEL_FAILED, reason

    async def _load_kept_writes(self) -> None:
        loaded = await asyncio.to_thread(self._parts.kept_writes.pending.load)  # saved by a stop while Redis was down
        if loaded:
            log.info("pending_writes_loaded", count=loaded)

    def _start_replay(self) -> None:
        replay = self._parts.kept_writes.replayer.run_forever(REPLAY_INTERVAL_SECONDS)
        self._background.append(asyncio.create_task(replay, name="replay-pending-writes"))

    def _mark_ready(self) -> None:
        engine = self._parts.models.registry.active_engine
        if engine is not None:
            self._parts.serving.phase = Phase.READY
            log.info("service_ready", model=engine.info.name, version=engine.info.version, pool_size=engine.pool.size)
        elif not self._parts.process.holds_models:
            self._parts.serving.phase = Phase.READY
            log.info("service_ready", inference_mode="remote")

    # Stop steps

    def _refuse_new_frames(self) -> None:
        self._parts.serving.phase = Phase.SHUTTING_DOWN
        self._parts.detection.refuse_new_frames()

    async def _drain_frames(self) -> None:
        detection = self._parts.detection
        if not await detection.wait_idle(self._parts.settings.detection.shutdown_drain_seconds):
            log.warning("drain_timed_out", in_flight=detection.in_flight)

    async def _stop_replay(self) -> None:
        """The replay task ends, then one last replay: what Redis takes now needs no saving."""
        await cancel_all(self._background)
        with contextlib.suppress(Exception):
            await self._parts.kept_writes.replayer.replay()

    async def _save_kept_writes(self) -> int:
        """What Redis could not take survives the stop: the next start replays it."""
        pending = self._parts.kept_writes.pending
        try:
            return await asyncio.to_thread(pending.save)
        except OSError as exc:
            log.error("pending_writes_not_saved", count=len(pending), error=str(exc))
            return 0

    def _log_shutdown_stats(self, saved: int) -> None:
        engine = self._parts.models.registry.active_engine
        pending = self._parts.kept_writes.pending
        log.info(
            "shutdown_stats",
            uptime_s=round(time.time() - self._parts.process.started_at, 1),
            pool=asdict(engine.stats()) if engine is not None else None,
            pending_writes_left=len(pending),
            pending_writes_dropped=pending.dropped,
            pending_writes_discarded=pending.discarded,
            pending_writes_saved=saved,
            replayed=pending.replayed,
            uploads=self._parts.uploads.service.stats(),
        )
