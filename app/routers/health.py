"""Kubernetes probes and the operators' deep check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.services.health import HealthChecks


def create_health_router(checks: HealthChecks) -> APIRouter:
    router = APIRouter(prefix="/health", tags=["health"])

    @router.get("/live")
    async def live() -> dict[str, Any]:
        """The process and its event loop answer; no dependency is consulted."""
        return {"status": "alive"}

    @router.get("/ready")
    async def ready() -> JSONResponse:
        report = await checks.readiness()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    @router.get("/deep")
    async def deep() -> JSONResponse:
        report = await checks.deep()
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    return router
