"""Readiness and deep health: what each dependency's state is, and why the service is or is not ready."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from app.services.errors import ApiError
from app.services.inference.types import DetectOptions
from app.services.serving import Phase, ServingState
from app.services.sessions.store import SessionStore
from app.services.timing import ms, ms_since
from app.services.uploads.service import UploadService

ASSETS = Path(__file__).resolve().parent.parent / "assets"
PROBE_IMAGE = ASSETS / "probe.jpg"
PROBE_EXPECTED = ASSETS / "probe.json"  # {"labels": [...]}: what the bundled model must find in probe.jpg


class HealthChecks:
    def __init__(
        self,
        state: ServingState,
        sessions: SessionStore,
        uploads: UploadService,
        *,
        fail_open: bool,
        probe_image: Path = PROBE_IMAGE,
        probe_expected: Path = PROBE_EXPECTED,
    ) -> None:
        self._state = state
        self._sessions = sessions
        self._uploads = uploads
        self._fail_open = fail_open
        self._probe_image = probe_image.read_bytes()
        self._expected_labels = set(json.loads(probe_expected.read_text())["labels"])

    async def _redis(self) -> dict[str, Any]:
        breaker = self._sessions.breaker
        try:
            latency = await self._sessions.ping()
        except ApiError as exc:
            return {"ok": False, "reason": exc.details.get("reason", exc.code), "breaker": breaker.state}
        return {"ok": True, "latency_ms": ms(latency), "breaker": breaker.state}

    def _model(self) -> dict[str, Any]:
        state = self._state
        if state.model_ok and state.engine is not None:
            return {"ok": True, "name": state.engine.info.name, "version": state.engine.info.version}
        return {"ok": False, "reason": state.model_error or "model is loading"}

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
        engine = self._state.engine
        if engine is None:
            return {"ok": False, "reason": self._state.model_error or "model is loading"}
        started = time.perf_counter()
        try:
            result = await engine.detect(self._probe_image, DetectOptions(), time.monotonic() + 5.0)
        except ApiError as exc:
            return {"ok": False, "reason": exc.code}
        found = {d.label for d in result.detections}
        return {
            "ok": self._expected_labels <= found,
            "latency_ms": ms_since(started),
            "expected_labels": sorted(self._expected_labels),
            "found_labels": sorted(found),
        }

    async def deep(self) -> dict[str, Any]:
        checks = {
            "inference": await self._inference(),
            "redis": await self._redis(),
            "storage": await self._uploads.check(),
        }
        return {"status": "ok" if all(c["ok"] for c in checks.values()) else "fail", "checks": checks}
