"""Prometheus scrape endpoint."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.services.core.errors import QueueUnavailable, SessionStoreUnavailable
from app.services.jobs.service import JobService
from app.services.observability.metrics import Metrics
from app.services.sessions.counting import ActiveSessions
from app.services.sessions.write_behind import PendingWrites


def create_metrics_router(
    metrics: Metrics,
    active_sessions: ActiveSessions,
    pending: PendingWrites,
    jobs: JobService,
    access: Any = None,
) -> APIRouter:
    """`access`: a dependency that decides who may scrape (`auth.metrics_access`); None: anyone."""
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", include_in_schema=False, dependencies=[access] if access is not None else [])
    async def scrape() -> Response:
        # Reads only (a cached scan, never a write). Redis down: keep the last known value; the breaker gauge says why.
        with contextlib.suppress(SessionStoreUnavailable):
            metrics.active_sessions.set(await active_sessions.count())
        with contextlib.suppress(QueueUnavailable):
            await jobs.queue_depth()  # sets hazard_queue_depth
        metrics.pending_writes.set(len(pending))
        metrics.pending_writes_lost.labels("buffer_full").set(pending.dropped)
        metrics.pending_writes_lost.labels("session_gone").set(pending.discarded)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
