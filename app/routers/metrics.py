"""Prometheus scrape endpoint."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.services.errors import SessionStoreUnavailable
from app.services.runtime import Runtime


def create_metrics_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        # Redis down: keep the last known value; the breaker gauge says why.
        with contextlib.suppress(SessionStoreUnavailable):
            runtime.metrics.active_sessions.set(await runtime.sessions.count_active())
        runtime.metrics.pending_writes.set(runtime.sessions.pending_writes)
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
