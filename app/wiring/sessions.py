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
        default_ttl=s.session_ttl_seconds,
        max_ttl=s.session_max_ttl_seconds,
        ended_grace=s.session_ended_grace_seconds,
        history_limit=s.session_history_limit,
        rate_per_second=s.session_rate_limit_per_second,
        rate_burst=s.session_rate_limit_burst,
        fail_open=s.session_store_fail_open,
        pending_limit=s.pending_writes_limit,
        count_max_age=s.active_sessions_refresh_seconds,
        metadata_limits=MetadataLimits(
            max_bytes=s.session_metadata_max_bytes,
            max_depth=s.session_metadata_max_depth,
            max_keys=s.session_metadata_max_keys,
        ),
        creation_limits=CreationLimits(
            per_minute=s.session_create_rate_per_minute,
            burst=s.session_create_burst,
            ttl_budget_seconds=s.session_create_ttl_budget_seconds,
            namespace=s.fleet_name,
        ),
        pending_file=s.pending_writes_file or s.spool_dir / PENDING_WRITES_FILE,
        observe=redis.observe,
    )


def build_tracking(settings: Settings, redis: RedisParts, sessions: SessionStore) -> TrackingService:
    return create_tracking(settings, redis.client, redis.breaker, sessions, redis.observe)
