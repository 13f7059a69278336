"""Readiness and deep health: what each dependency's state is, and why the service is or is not ready."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from app.services.errors import ApiError
from app.services.inference.engine import DetectOptions
from app.services.runtime import Phase, Runtime

ASSETS = Path(__file__).resolve().parent.parent / "assets"
PROBE_IMAGE = ASSETS / "probe.jpg"
PROBE_EXPECTED = ASSETS / "probe.json"  # {"labels": [...]}: what the bundled model must find in probe.jpg


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


class HealthChecks:
    def __init__(
        self, runtime: Runtime, probe_image: Path = PROBE_IMAGE, probe_expected: Path = PROBE_EXPECTED
    ) -> None:
        self._runtime = runtime
        self._probe_image = probe_image.read_bytes()
        self._expected_labels = set(json.loads(probe_expected.read_text())["labels"])

    async def _redis(self) -> dict[str, Any]:
        try:
            latency = await self._runtime.sessions.ping()
        except ApiError as exc:
            return {
                "ok": False,
                "reason": exc.details.get("reason", exc.code),
                "breaker": self._runtime.redis_breaker.state,
            }
        return {"ok": True, "latency_ms": _ms(latency), "breaker": self._runtime.redis_breaker.state}

    def _model(self) -> dict[str, Any]:
        runtime = self._runtime
        if runtime.engine is not None and runtime.phase in (Phase.READY, Phase.SHUTTING_DOWN):
            return {"ok": True, "name": runtime.engine.info.name, "version": runtime.engine.info.version}
        return {"ok": False, "reason": runtime.model_error or "model is loading"}

    async def readiness(self) -> dict[str, Any]:
        runtime = self._runtime
        model, redis = self._model(), await self._redis()
        fail_open = runtime.settings.session_store_fail_open
        reasons = []
        if runtime.phase is Phase.SHUTTING_DOWN:
            reasons.append("shutting down")
        if not model["ok"]:
            reasons.append(f"model: {model['reason']}")
        if not redis["ok"] and not fail_open:
            reasons.append(f"redis: {redis['reason']}")
        return {
            "ready": not reasons,
            "phase": runtime.phase.value,
            "degraded": not redis["ok"],
            "reasons": reasons,
            "checks": {"model": model, "redis": redis},
        }

    async def _inference(self) -> dict[str, Any]:
        engine = self._runtime.engine
        if engine is None:
            return {"ok": False, "reason": self._runtime.model_error or "model is loading"}
        started = time.perf_counter()
        try:
            result = await engine.detect(self._probe_image, DetectOptions(), time.monotonic() + 5.0)
        except ApiError as exc:
            return {"ok": False, "reason": exc.code}
        found = {d.label for d in result.detections}
        return {
            "ok": self._expected_labels <= found,
            "latency_ms": _ms(time.perf_counter() - started),
            "expected_labels": sorted(self._expected_labels),
            "found_labels": sorted(found),
        }

    async def deep(self) -> dict[str, Any]:
        checks = {
            "inference": await self._inference(),
            "redis": await self._redis(),
            "storage": await self._runtime.uploads.check(),
        }
        return {"status": "ok" if all(c["ok"] for c in checks.values()) else "fail", "checks": checks}
