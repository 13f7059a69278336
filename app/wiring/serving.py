"""The frame path and the health checks that watch it."""

from __future__ import annotations

from app.services.core.serving import ServingState
from app.services.detection.service import DetectionService
from app.services.observability.health import HealthChecks
from app.services.observability.metrics import Metrics
from app.services.sessions.store import SessionStore
from app.services.tracking.service import TrackingService
from app.settings import Settings
from app.wiring.jobs import Jobs
from app.wiring.models import Models
from app.wiring.process import ProcessInfo
from app.wiring.registry import Registry
from app.wiring.uploads import Uploads


def build_detection(
    sessions: SessionStore, uploads: Uploads, metrics: Metrics, jobs: Jobs, tracking: TrackingService
) -> DetectionService:
    return DetectionService(sessions, uploads.policy, metrics, jobs.live_detector, tracking)


def build_health(
    settings: Settings,
    serving: ServingState,
    models: Models,
    sessions: SessionStore,
    uploads: Uploads,
    jobs: Jobs,
    process: ProcessInfo,
    registry: Registry | None = None,
) -> HealthChecks:
    return HealthChecks(
        serving,
        models.registry,
        sessions,
        uploads.service,
        models.probe,
        jobs.live_detector,
        holds_models=process.holds_models,
        fail_open=settings.sessions.store_fail_open,
        deep_cache_seconds=settings.telemetry.health_deep_cache_seconds,
        hazard_registry=None if registry is None else registry.health,
    )
