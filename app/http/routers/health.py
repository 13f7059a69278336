"""Kubernetes probes and the operators' deep check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel

from app.http.openapi import error_responses
from app.http.schemas.health import DeepReport, LiveReport, ReadyReport
from app.services.core.errors import ApiError, TooManyLoginAttempts, Unauthorized
from app.services.observability.health import HealthChecks


def create_health_router(checks: HealthChecks, deep_access: Any = None) -> APIRouter:
    """`deep_access`: a dependency that decides who may run the deep check (`auth.key_or_operator`); None: anyone.
    It runs a real inference, so anonymous callers in keys mode get 401: eight anonymous loops of it doubled the
    median frame latency (issue 23)."""
    router = APIRouter(prefix="/health", tags=["health"])

    @router.get("/live", responses=error_responses())
    async def health_live() -> LiveReport:
        """The process and its event loop answer; no dependency is consulted."""
        return LiveReport(status="alive")

    @router.get(
        "/ready",
        responses=_report_on_503(ReadyReport, "Not ready: the same report, with `reasons`."),
        response_model_exclude_none=True,
    )
    async def health_ready(response: Response) -> ReadyReport:
        """Model compiled and warm, Redis reachable (or degraded mode allowed), not shutting down."""
        report = ReadyReport.model_validate(await checks.readiness())
        response.status_code = 200 if report.ready else 503
        return report

    @router.get(
        "/deep",
        responses=_report_on_503(
            DeepReport, "A check failed: the same report, `status: fail`.", Unauthorized, TooManyLoginAttempts
        ),
        response_model_exclude_none=True,
        dependencies=[deep_access] if deep_access is not None else [],
    )
    async def health_deep(response: Response) -> DeepReport:
        """A real inference on a built-in frame, a Redis ping and the upload store, each with its latency."""
        report = DeepReport.model_validate(await checks.deep())
        response.status_code = 200 if report.status == "ok" else 503
        return report

    return router


def _report_on_503(
    report: type[BaseModel], description: str, *errors: type[ApiError]
) -> dict[int | str, dict[str, Any]]:
    """Probes answer 503 with their own report, not the error shape: Kubernetes reads the status only."""
    return {**error_responses(*errors), 503: {"model": report, "description": description}}
