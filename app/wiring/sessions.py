"""Client sessions (the store, its admission limits, its kept writes, the active count) and tracking, on the
service's one Redis client and breaker. The replayer is built last: it replays through the store and tracking."""

from __future__ import annotations

from dataclasses import dataclass

from app.services.sessions.admission import CreationBudget, CreationLimits, FrameRateLimit
from app.services.sessions.counting import ActiveSessions
from app.services.sessions.guarded import GuardedRedis
from app.services.sessions.ledger import UploadLedger
from app.services.sessions.metadata import MetadataLimits
from app.services.sessions.store import SessionLimits, SessionStore
from app.services.sessions.write_behind import PendingWrites, Replayer
from app.services.tracking.service import TrackingObserver, TrackingService, create_tracking
from app.settings import Settings
from app.wiring.redis import RedisParts

PENDING_WRITES_FILE = "pending-writes.jsonl"  # beside the upload spool unless PENDING_WRITES_FILE says otherwise


@dataclass(frozen=True)
class Sessions:
    store: SessionStore
    pending: PendingWrites  # what Redis could not take: kept, saved at stop, replayed
    active: ActiveSessions
    ledger: UploadLedger  # where an upload's outcome is written into its session's history


@dataclass(frozen=True)
class KeptWrites:
    pending: PendingWrites
    replayer: Replayer


def build_sessions(settings: Settings, redis: RedisParts) -> Sessions:
    s = settings.sessions
    calls = GuardedRedis(redis.client, redis.breaker, redis.observe)
    pending = PendingWrites(
        s.pending_writes_limit, s.pending_writes_file or settings.uploads.spool_dir / PENDING_WRITES_FILE
    )
    active = ActiveSessions(calls, settings.telemetry.active_sessions_refresh_seconds)
    store = SessionStore(
        calls,
        _session_limits(settings),
        CreationBudget(calls, _creation_limits(settings)),
        pending,
        fail_open=s.store_fail_open,
    )
    return Sessions(store, pending, active, UploadLedger(calls))


def build_tracking(
    settings: Settings, redis: RedisParts, sessions: SessionStore, observer: TrackingObserver | None = None
) -> TrackingService:
    s = settings
    return create_tracking(
        s.tracking, s.uploads, s.fleet.name, redis.client, redis.breaker, sessions, redis.observe, observer
    )


def build_kept_writes(sessions: Sessions, tracking: TrackingService) -> KeptWrites:
    return KeptWrites(sessions.pending, Replayer(sessions.pending, sessions.store.write_kept, tracking.apply))


def _session_limits(settings: Settings) -> SessionLimits:
    s = settings.sessions
    return SessionLimits(
        default_ttl=s.ttl_seconds,
        max_ttl=s.max_ttl_seconds,
        ended_grace=s.ended_grace_seconds,
        history_limit=s.history_limit,
        frame_rate=FrameRateLimit(s.rate_limit_per_second, s.rate_limit_burst),
        metadata=MetadataLimits(
            max_bytes=s.metadata_max_bytes, max_depth=s.metadata_max_depth, max_keys=s.metadata_max_keys
        ),
    )


def _creation_limits(settings: Settings) -> CreationLimits:
    s = settings.sessions
    return CreationLimits(
        per_minute=s.create_rate_per_minute,
        burst=s.create_burst,
        ttl_budget_seconds=s.create_ttl_budget_seconds,
        namespace=settings.fleet.name,
    )
