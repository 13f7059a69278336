"""The control center's services, built from the runtime's (one Redis client, one registry, one job service)."""

from __future__ import annotations

from dataclasses import dataclass

from app.services.fleet.control_center import ControlCenter
from app.services.identity.operator_sessions import OperatorSessions
from app.services.sessions.listing import SessionLister
from app.settings import Settings
from app.wiring.runtime import Runtime

SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class ControlRuntime:
    center: ControlCenter
    sessions: OperatorSessions
    secure_cookies: bool  # Secure cookies everywhere but local development and tests (plain http there)


def create_control_runtime(settings: Settings, runtime: Runtime) -> ControlRuntime:
    center = ControlCenter(
        runtime.model_control,
        runtime.jobs.service,
        runtime.active_sessions,
        SessionLister(runtime.redis, runtime.redis_breaker),
        runtime.tracking,
        runtime.metrics.recent_detect,
        process_id=runtime.process_id,
    )
    secret = settings.admin_session_secret
    sessions = OperatorSessions(
        runtime.redis,
        namespace=settings.fleet_name,
        lifetime_seconds=settings.admin_session_hours * SECONDS_PER_HOUR,
        secret=secret.get_secret_value() if secret is not None else None,
    )
    return ControlRuntime(center, sessions, secure_cookies=settings.environment not in ("local", "test"))
