"""Readiness and deep health: what each dependency's state is, and why the service is or is not ready."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from app.services.errors import ApiError
from app.services.inference.probe import Probe
from app.services.inference.registry import ModelRegistry
from app.services.serving import Phase, ServingState
from app.services.sessions.store import SessionStore
from app.services.timing import ms
from app.services.uploads.service import UploadService


class HealthChecks:
    def __init__(
        self,
        state: ServingState,
        registry: ModelRegistry,
        sessions: SessionStore,
        uploads: UploadService,
        probe: Probe,
        *,
        fail_open: bool,
    ) -> None:
        self._state = state
        self._registry = registry
        self._sessions = sessions
        self._uploads = uploads
        self._probe = probe
        self._fail_open = fail_open

    async def _redis(self) -> dict[str, Any]:
        breaker = self._sessions.breaker
        try:
            latency = await self._sessions.ping()
        except ApiError as exc:
            return {"ok": False, "reason": exc.details.get("reason", exc.code), "breaker": breaker.state}
        return {"ok": True, "latency_ms": ms(latency), "breaker": breaker.state}

    def _model(self) -> dict[str, Any]:
        engine = self._registry.active_engine
        if engine is not None and self._state.phase in (Phase.READY, Phase.SHUTTING_DOWN):
            return {"ok": True, "name": engine.info.name, "version": engine.info.version}
        return {"ok": False, "reason": self._state.model_error or "model is loading"}

    async def readiness(self) -> dict[str, Any]:
        model, redis = self._model(), await self._redis()
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
            "degraded": not redis["ok"],
            "reasons": reasons,
            "checks": {"model": model, "redis": redis},
        }

    async def _inference(self) -> dict[str, Any]:
        engine = self._registry.active_engine
        if engine is None:
            return {"ok": False, "reason": self._state.model_error or "model is loading"}
        try:
            result = await self._probe.run(engine)
        except ApiError as exc:
            return {"ok": False, "reason": exc.code}
        return {**asdict(result), "model": engine.info.name}

    async def deep(self) -> dict[str, Any]:
        checks = {
            "inference": await self._inference(),
            "redis": await self._redis(),
            "storage": await self._uploads.check(),
        }
        return {"status": "ok" if all(c["ok"] for c in checks.values()) else "fail", "checks": checks}
