"""The session store (and its kept writes) and tracking, on the service's one Redis client and breaker."""

from __future__ import annotations

from app.services.sessions.metadata import MetadataLimits
from app.services.sessions.store import CreationLimits, SessionStore
from app.services.tracking.service import TrackingService, create_tracking
from app.settings import Settings
from app.wiring.redis import RedisParts

PENDING_WRITES_FILE = "pending-writes.jsonl"  # beside the upload spool unless PENDING_WRITES_FILE says otherwise


def build_sessions(settings: Settings, redis: RedisParts) -> SessionStore:
    s = settings
    return SessionStore(
        redis.client,
        redis.breaker,
        default_ttl=s.sessions.ttl_seconds,
        max_ttl=s.sessions.max_ttl_seconds,
        ended_grace=s.sessions.ended_grace_seconds,
        history_limit=s.sessions.history_limit,
        rate_per_second=s.sessions.rate_limit_per_second,
        rate_burst=s.sessions.rate_limit_burst,
        fail_open=s.sessions.store_fail_open,
        pending_limit=s.sessions.pending_writes_limit,
        count_max_age=s.telemetry.active_sessions_refresh_seconds,
        metadata_limits=MetadataLimits(
            max_bytes=s.sessions.metadata_max_bytes,
            max_depth=s.sessions.metadata_max_depth,
            max_keys=s.sessions.metadata_max_keys,
        ),
        creation_limits=CreationLimits(
            per_minute=s.sessions.create_rate_per_minute,
            burst=s.sessions.create_burst,
            ttl_budget_seconds=s.sessions.create_ttl_budget_seconds,
            namespace=s.fleet.name,
        ),
        pending_file=s.sessions.pending_writes_file or s.uploads.spool_dir / PENDING_WRITES_FILE,
        observe=redis.observe,
    )


def build_tracking(settings: Settings, redis: RedisParts, sessions: SessionStore) -> TrackingService:
    return create_tracking(
        settings.tracking, settings.uploads, settings.fleet.name, redis.client, redis.breaker, sessions, redis.observe
    )
