"""Every part a process runs, each built once by its subsystem's `build_*`, in dependency order.

Both roles build the same parts; the role decides how (a worker compiles for throughput, takes live frames from
the queue and never uploads) and the lifecycle decides what starts (app/wiring/lifecycle.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.services.core.serving import ServingState
from app.services.detection.service import DetectionService
from app.services.observability.health import HealthChecks
from app.services.observability.metrics import Metrics
from app.services.sessions.counting import ActiveSessions
from app.services.sessions.store import SessionStore
from app.services.tracking.service import TrackingService
from app.services.uploads.signing import MediaSigner
from app.settings import Settings
from app.wiring.fleet import Fleet, build_fleet
from app.wiring.heartbeat import ProcessDescription
from app.wiring.identity import build_media_signer
from app.wiring.jobs import Jobs, build_jobs
from app.wiring.models import Models, build_models
from app.wiring.process import ProcessInfo, Role, build_process
from app.wiring.redis import RedisParts, build_redis
from app.wiring.registry import Registry, build_registry
from app.wiring.serving import build_detection, build_health
from app.wiring.sessions import KeptWrites, build_kept_writes, build_sessions, build_tracking
from app.wiring.uploads import Uploads, build_uploads


@dataclass(frozen=True)
class Parts:
    settings: Settings
    process: ProcessInfo
    metrics: Metrics
    serving: ServingState  # the phase: starting, ready, model failed, shutting down
    redis: RedisParts
    sessions: SessionStore
    active_sessions: ActiveSessions
    kept_writes: KeptWrites  # Redis writes kept while it is down, and their replay
    tracking: TrackingService
    uploads: Uploads
    models: Models
    jobs: Jobs
    detection: DetectionService
    health: HealthChecks
    fleet: Fleet
    registry: Registry  # the hazard registry (SQL), fed by tracking off the request path
    media_urls: MediaSigner  # signs the /media URLs handed out (answers, pages, webhook bodies)


def build_parts(settings: Settings, role: Role) -> Parts:
    process = build_process(settings, role)
    metrics = Metrics()
    serving = ServingState()
    redis = build_redis(settings, metrics)
    sessions = build_sessions(settings, redis)
    media_urls = build_media_signer(settings)
    registry = build_registry(settings, media_urls)
    tracking = build_tracking(settings, redis, sessions.store, registry.feed)
    kept_writes = build_kept_writes(sessions, tracking)
    uploads = build_uploads(settings, metrics, sessions.ledger, tracking)
    models = build_models(settings, metrics, serving, role)
    jobs = build_jobs(settings, metrics, models.registry, sessions.store, process)
    detection = build_detection(sessions.store, uploads, metrics, jobs, tracking)
    health = build_health(settings, serving, models, sessions.store, uploads, jobs, process, registry)
    describe = ProcessDescription(
        process,
        serving,
        models.registry,
        detection,
        redis.breaker,
        uploads.service,
        memory_limit_mb=settings.model.memory_limit_mb,
    )
    fleet = build_fleet(settings, redis, models.registry, process, describe)
    return Parts(
        settings,
        process,
        metrics,
        serving,
        redis,
        sessions.store,
        sessions.active,
        kept_writes,
        tracking,
        uploads,
        models,
        jobs,
        detection,
        health,
        fleet,
        registry,
        media_urls,
    )
