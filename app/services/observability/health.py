"""Readiness and deep health: what each dependency's state is, and why the service is or is not ready.

The deep check runs a real inference: unauthenticated, it is answered from one run shared by every caller for
`deep_cache_seconds` (callers that arrive while it runs wait for that run), so a burst of probes costs one inference.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from app.services.core.errors import ApiError
from app.services.core.serving import Phase, ServingState
from app.services.core.timing import ms
from app.services.detection.detectors import Detector
from app.services.inference.probe import Probe
from app.services.inference.registry import ModelRegistry
from app.services.sessions.store import SessionStore
from app.services.uploads.service import UploadService


class HealthChecks:
    def __init__(
        self,
        state: ServingState,
        registry: ModelRegistry,
        sessions: SessionStore,
        uploads: UploadService,
        probe: Probe,
        detector: Detector,
        *,
        holds_models: bool,
        fail_open: bool,
        deep_cache_seconds: float = 5.0,
        hazard_registry: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._state = state
        self._registry = registry
        self._sessions = sessions
        self._uploads = uploads
        self._probe = probe
        self._detector = detector  # where live frames run: this process's engine, or the queue's workers
        self._holds_models = holds_models
        self._fail_open = fail_open
        self._deep_cache_seconds = deep_cache_seconds
        self._registry_health = hazard_registry  # the hazard registry's state: down degrades, never fails, readiness
        self._deep_run: asyncio.Task[dict[str, Any]] | None = None
        self._deep_at = 0.0  # time.monotonic() when the cached run finished
        self.deep_runs = 0

    async def _redis(self) -> dict[str, Any]:
        breaker = self._sessions.breaker
        try:
            latency = await self._sessions.ping()
        except ApiError as exc:
            return {"ok": False, "reason": exc.details.get("reason", exc.code), "breaker": breaker.state}
        return {"ok": True, "latency_ms": ms(latency), "breaker": breaker.state}

    def _model(self) -> dict[str, Any]:
        if not self._holds_models:  # the deep check proves the workers answer; readiness needs only this process
            return {"ok": True, "reason": "INFERENCE_MODE=remote: models run on the queue's workers"}
        engine = self._registry.active_engine
        if engine is not None and self._state.phase in (Phase.READY, Phase.SHUTTING_DOWN):
            return {"ok": True, "name": engine.info.name, "version": engine.info.version, "precision": engine.precision}
        return {"ok": False, "reason": self._state.model_error or "model is loading"}

    async def readiness(self) -> dict[str, Any]:
        model, redis = self._model(), await self._redis()
        checks = {"model": model, "redis": redis}
        if self._registry_health is not None:
            checks["registry"] = self._registry_health()
        reasons = []
        if self._state.phase is Phase.SHUTTING_DOWN:
            reasons.append("shutting down")
        if not model["ok"]:
            reasons.append(f"model: {model['reason']}")
        if not redis["ok"] and not self._fail_open:
            reasons.append(f"redis: {redis['reason']}")
        return {
            "ready": not reasons,
            "phase": self._state.phase.value,
            "degraded": not all(check["ok"] for check in checks.values() if check is not model),
            "reasons": reasons,
            "checks": checks,
        }

    async def _inference(self) -> dict[str, Any]:
        try:
            result, model = await self._probe.run(self._detector.bind(None))
        except ApiError as exc:
            return {"ok": False, "reason": self._state.model_error or exc.code}
        return {**asdict(result), "model": model.name}

    async def deep(self) -> dict[str, Any]:
        """The latest deep report, at most `deep_cache_seconds` old (`age_seconds` says how old)."""
        run = self._deep_run
        fresh = run is not None and (not run.done() or time.monotonic() - self._deep_at < self._deep_cache_seconds)
        if run is None or not fresh:
            run = self._deep_run = asyncio.create_task(self._run_deep(), name="health-deep")
        # shield: a caller that hangs up must not cancel the run the others are waiting for
        report = await asyncio.shield(run)
        return {**report, "age_seconds": round(time.monotonic() - self._deep_at, 3)}

    async def _run_deep(self) -> dict[str, Any]:
        self.deep_runs += 1
        try:
            return await self._checks()
        finally:
            self._deep_at = time.monotonic()

    async def _checks(self) -> dict[str, Any]:
        checks = {
            "inference": await self._inference(),
            "redis": await self._redis(),
            "storage": await self._uploads.check(),
        }
        return {"status": "ok" if all(c["ok"] for c in checks.values()) else "fail", "checks": checks}
