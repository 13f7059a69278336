"""The one settings object, in groups by what they configure (`settings.sessions.ttl_seconds`).

Operators set flat environment variables (or a `.env` file) as they always have: each field declares its variable
(`validation_alias="SESSION_TTL_SECONDS"`), and that one declaration is the table from which the environment is read,
flat keyword arguments (`Settings(session_ttl_seconds=60)`) are routed and errors name the variable.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

STREAM_HEADER_ALLOWANCE = 64 * 1024
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class _Group(BaseModel):
    # Built by field name in code and tests, by environment name (the alias) from a flat mapping.
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)


class ModelSettings(_Group):
    """The model repository and how OpenVINO compiles and runs a version."""

    # The repository: every sub-folder holding an OpenVINO export is a version. MODEL_DIR's folder is the
    # version a fleet activates first (it is served even when it lies outside the repository).
    repository: Path = Field(Path("models"), validation_alias="MODEL_REPOSITORY")
    dir: Path = Field(Path("models/best0408_openvino_model"), validation_alias="MODEL_DIR")
    # OpenVINO's compiled-blob cache: fast re-loads
    cache_dir: Path | None = Field(Path("var/model-cache"), validation_alias="MODEL_CACHE_DIR")
    # A load that would push RSS past it is refused.
    memory_limit_mb: float = Field(1024.0, gt=0, validation_alias="MODEL_MEMORY_LIMIT_MB")
    # How long an unloaded version may finish its frames.
    drain_seconds: float = Field(10.0, ge=0, validation_alias="MODEL_DRAIN_SECONDS")
    device: str = Field("CPU", validation_alias="MODEL_DEVICE")
    # Default: ADAPTIVE for an API (a frame alone on every core, overlapping frames on a stream each), THROUGHPUT for
    # a hazard-worker (a stream per core: the most frames per second).
    performance_hint: Literal["LATENCY", "THROUGHPUT", "ADAPTIVE"] | None = Field(
        None, validation_alias="MODEL_PERFORMANCE_HINT"
    )
    # Default: OpenVINO's choice, bf16 on CPUs that have it (same detections, ~1.7x faster than f32). f32 makes a
    # fleet of mixed CPUs answer alike, and is needed where oneDNN's instruction set is capped (ONEDNN_MAX_CPU_ISA).
    inference_precision: Literal["f32", "bf16", "f16"] | None = Field(
        None, validation_alias="MODEL_INFERENCE_PRECISION"
    )
    warmup_requests: int = Field(3, ge=0, validation_alias="MODEL_WARMUP_REQUESTS")
    max_concurrent: int | None = Field(
        None, ge=1, description="infer requests; default: OpenVINO's optimum", validation_alias="MODEL_MAX_CONCURRENT"
    )
    inference_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for OpenVINO; default: all cores",
        validation_alias="MODEL_INFERENCE_THREADS",
    )


class DetectionSettings(_Group):
    """How a live frame is admitted and served: the engine's queue, the frame's deadline, its options' defaults."""

    queue_size: int = Field(100, ge=1, validation_alias="MAX_REQUEST_QUEUE_SIZE")
    # A live frame older than this is no longer worth an answer.
    timeout_seconds: float = Field(1.0, gt=0, validation_alias="REQUEST_TIMEOUT_SECONDS")
    # A live frame the engine can expect to take longer than this to serve (its wait for the model plus its own
    # inference) is refused at once (503 OVERLOADED + Retry-After) instead of queued: under overload, the frames
    # accepted stay fast (P95 < 150 ms) and the rest learn it in milliseconds, not at their deadline.
    latency_budget_seconds: float = Field(0.1, gt=0, validation_alias="LIVE_LATENCY_BUDGET_SECONDS")
    default_confidence: float = Field(0.25, ge=0, le=1, validation_alias="DEFAULT_CONFIDENCE")
    default_iou: float = Field(0.45, ge=0, le=1, validation_alias="DEFAULT_IOU")
    default_max_detections: int = Field(100, ge=1, le=1000, validation_alias="DEFAULT_MAX_DETECTIONS")
    # At shutdown, how long the frames in flight may finish.
    shutdown_drain_seconds: float = Field(10.0, ge=0, validation_alias="SHUTDOWN_DRAIN_SECONDS")


class ImageSettings(_Group):
    """What one frame may cost before it is decoded."""

    max_bytes: int = Field(10 * 1024 * 1024, ge=1024, validation_alias="MAX_IMAGE_BYTES")
    max_pixels: int = Field(40_000_000, ge=1, validation_alias="MAX_IMAGE_PIXELS")
    # Pixels a frame may cost to decode, after JPEG's draft scaling toward the model input: PNG and WebP are
    # decoded whole, and a few bytes of lossless WebP can claim 40 MP (~0.9 s of CPU). 3840x2160 by default.
    max_decode_pixels: int = Field(3840 * 2160, ge=1, validation_alias="MAX_DECODE_PIXELS")


class RedisSettings(_Group):
    """The Redis that holds sessions, tracks, the fleet's keys (and, by default, the job queue)."""

    # With REDIS_MODE=cluster: one seed node, db 0.
    url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    mode: Literal["standalone", "cluster"] = Field("standalone", validation_alias="REDIS_MODE")
    socket_timeout_seconds: float = Field(0.5, gt=0, validation_alias="REDIS_SOCKET_TIMEOUT_SECONDS")
    max_connections: int = Field(64, ge=1, validation_alias="REDIS_MAX_CONNECTIONS")

    @model_validator(mode="after")
    def _cluster_has_only_db_0(self) -> RedisSettings:
        if self.mode == "cluster" and urlsplit(self.url).path.strip("/") not in ("", "0"):
            raise ValueError("REDIS_URL must name db 0 (or none) when REDIS_MODE=cluster: a cluster has only db 0")
        return self


class BreakerSettings(_Group):
    """The circuit breakers in front of Redis and the upload store."""

    fail_max: int = Field(3, ge=1, validation_alias="BREAKER_FAIL_MAX")
    reset_seconds: float = Field(5.0, gt=0, validation_alias="BREAKER_RESET_SECONDS")


class SessionSettings(_Group):
    """Sessions: lifetimes, history, per-session and per-client limits, metadata bounds, writes kept while Redis
    is down."""

    ttl_seconds: int = Field(3600, ge=1, validation_alias="SESSION_TTL_SECONDS")
    max_ttl_seconds: int = Field(86400, ge=1, validation_alias="SESSION_MAX_TTL_SECONDS")
    ended_grace_seconds: int = Field(300, ge=1, validation_alias="SESSION_ENDED_GRACE_SECONDS")
    history_limit: int = Field(200, ge=1, validation_alias="SESSION_HISTORY_LIMIT")
    rate_limit_per_second: float = Field(30.0, gt=0, validation_alias="SESSION_RATE_LIMIT_PER_SECOND")
    rate_limit_burst: int = Field(60, ge=1, validation_alias="SESSION_RATE_LIMIT_BURST")
    store_fail_open: bool = Field(True, validation_alias="SESSION_STORE_FAIL_OPEN")
    # Client metadata of a session, checked before it is stored (422 VALIDATION_ERROR naming the limit).
    metadata_max_bytes: int = Field(4096, ge=2, validation_alias="SESSION_METADATA_MAX_BYTES")  # compact UTF-8 JSON
    # The metadata object itself is level 1.
    metadata_max_depth: int = Field(8, ge=1, validation_alias="SESSION_METADATA_MAX_DEPTH")
    # Keys of every object in it, nested ones included.
    metadata_max_keys: int = Field(64, ge=0, validation_alias="SESSION_METADATA_MAX_KEYS")
    pending_writes_limit: int = Field(10_000, ge=1, validation_alias="PENDING_WRITES_LIMIT")
    # Where kept writes are saved at shutdown (and read back at start); default: `<SPOOL_DIR>/pending-writes.jsonl`.
    pending_writes_file: Path | None = Field(None, validation_alias="PENDING_WRITES_FILE")
    # Session creation per client (peer address, or CLIENT_ADDRESS_HEADER from TRUSTED_PROXIES): a token bucket of
    # sessions, and a budget of TTL-seconds refilled over an hour (a 24 h session costs 24 default ones).
    create_rate_per_minute: float = Field(30.0, gt=0, validation_alias="SESSION_CREATE_RATE_PER_MINUTE")
    create_burst: int = Field(60, ge=1, validation_alias="SESSION_CREATE_BURST")
    create_ttl_budget_seconds: int = Field(7 * 86400, ge=1, validation_alias="SESSION_CREATE_TTL_BUDGET_SECONDS")

    @model_validator(mode="after")
    def _default_ttl_within_the_maximum(self) -> SessionSettings:
        if self.ttl_seconds > self.max_ttl_seconds:
            raise ValueError("SESSION_TTL_SECONDS must not exceed SESSION_MAX_TTL_SECONDS")
        return self


class FleetSettings(_Group):
    """The fleet: heartbeats, desired model state and commands in Redis."""

    # Deployments sharing a Redis use different names.
    name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$", validation_alias="FLEET_NAME")
    heartbeat_seconds: float = Field(2.0, gt=0, validation_alias="FLEET_HEARTBEAT_SECONDS")
    poll_seconds: float = Field(0.5, gt=0, validation_alias="FLEET_POLL_SECONDS")
    # How a restart from the control center comes back: `auto` exits for systemd or Kubernetes (seen in the
    # environment) to start it again, else re-executes itself; `yes` always exits, `no` always re-executes.
    supervised: Literal["auto", "yes", "no"] = Field("auto", validation_alias="PROCESS_SUPERVISED")


class TrackingSettings(_Group):
    """Hazard tracking (per session) and the fleet's hazard map."""

    # Frames before a track is a hazard (new_hazard: true on the last one).
    min_hits: int = Field(5, ge=1, validation_alias="TRACK_MIN_HITS")
    # A track unmatched for longer is closed.
    max_gap_seconds: float = Field(1.0, gt=0, validation_alias="TRACK_MAX_GAP_SECONDS")
    # IoU of the expanded boxes to match a track.
    iou_threshold: float = Field(0.2, gt=0, le=1, validation_alias="TRACK_IOU_THRESHOLD")
    # Each side of both boxes grows by this fraction first.
    box_expand: float = Field(0.25, ge=0, le=2, validation_alias="TRACK_BOX_EXPAND")
    # ... in proportion to the time between the frame and the view it meets, past this (a box moves between frames).
    expand_interval_seconds: float = Field(0.1, gt=0, le=10, validation_alias="TRACK_EXPAND_INTERVAL_SECONDS")
    # Same class within this is one map hazard.
    merge_meters: float = Field(8.0, gt=0, le=1000, validation_alias="HAZARD_MERGE_METERS")
    # ... and only when their positions agree within this many standard deviations of their difference.
    merge_sigmas: float = Field(3.0, gt=0, le=10, validation_alias="HAZARD_MERGE_SIGMAS")
    # A vehicle's GPS bias (m, one standard deviation per axis): in every position's uncertainty.
    gps_sigma_m: float = Field(1.5, gt=0, le=100, validation_alias="TRACK_GPS_SIGMA_M")
    # The field of view an estimated calibration assumes (road points cannot tell focal length from height).
    assumed_hfov_deg: float = Field(60.0, ge=10, le=179, validation_alias="TRACK_ASSUMED_HFOV_DEG")
    # A map hazard with no new report for this long expires.
    map_ttl_days: float = Field(30.0, gt=0, validation_alias="HAZARD_MAP_TTL_DAYS")


class RegistrySettings(_Group):
    """The hazard registry: durable hazard records in SQL, mirrored off the request path from the fleet's map."""

    # SQLAlchemy async URL: SQLite by default, `postgresql+asyncpg://...` in production.
    url: str = Field("sqlite+aiosqlite:///var/registry.db", min_length=1, validation_alias="REGISTRY_URL")
    # A down or locked database is given up on after this (its writes are kept and replayed).
    connect_timeout_seconds: float = Field(5.0, gt=0, le=120, validation_alias="REGISTRY_CONNECT_TIMEOUT_SECONDS")
    # Clean passes after the last sighting that make a hazard suspected_fixed.
    passes_to_fix: int = Field(3, ge=1, le=100, validation_alias="REGISTRY_PASSES_TO_FIX")
    # How far ahead a camera sees a hazard: in view within this distance, then driven past, it is a pass.
    pass_range_m: float = Field(25.0, gt=0, le=500, validation_alias="REGISTRY_PASS_RANGE_M")
    # Kept sightings are retried this often while the database is down.
    replay_seconds: float = Field(2.0, gt=0, le=3600, validation_alias="REGISTRY_REPLAY_SECONDS")
    # Sightings kept in memory while the database is down; past it the oldest go (the map still has them).
    buffer_limit: int = Field(10_000, ge=1, validation_alias="REGISTRY_BUFFER_LIMIT")
    # Hazards one page of `GET /hazards/registry` may hold.
    max_page_size: int = Field(500, ge=1, le=10_000, validation_alias="REGISTRY_MAX_PAGE_SIZE")
    # The most ground one registry query or export's `bbox` may cover, km² on the sphere (a large state or country).
    max_bbox_km2: float = Field(1_000_000.0, gt=0, validation_alias="REGISTRY_MAX_BBOX_KM2")
    # Map tiles for the control center's map page (`{z}/{x}/{y}` URL); unset: a plain background.
    map_tile_url: str | None = Field(None, validation_alias="MAP_TILE_URL")
    # Webhooks: a delivery is tried this many times (backoff doubling from base to max), then dead (replayable).
    webhook_max_attempts: int = Field(8, ge=1, le=100, validation_alias="WEBHOOK_MAX_ATTEMPTS")
    webhook_retry_base_seconds: float = Field(10.0, gt=0, validation_alias="WEBHOOK_RETRY_BASE_SECONDS")
    webhook_retry_max_seconds: float = Field(3600.0, gt=0, validation_alias="WEBHOOK_RETRY_MAX_SECONDS")
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120, validation_alias="WEBHOOK_TIMEOUT_SECONDS")
    # How often the sender looks for due deliveries.
    webhook_poll_seconds: float = Field(1.0, gt=0, le=3600, validation_alias="WEBHOOK_POLL_SECONDS")


class UploadSettings(_Group):
    """Annotated uploads: where frames go (Cloudinary or the local store), which frames, the spool of retries."""

    cloudinary_url: SecretStr | None = Field(None, validation_alias="CLOUDINARY_URL")
    cloudinary_timeout_seconds: float = Field(10.0, gt=0, validation_alias="CLOUDINARY_TIMEOUT_SECONDS")
    storage_dir: Path = Field(Path("var/uploads"), validation_alias="STORAGE_DIR")
    spool_dir: Path = Field(Path("var/spool"), validation_alias="SPOOL_DIR")
    min_confidence: float = Field(0.5, ge=0, le=1, validation_alias="UPLOAD_MIN_CONFIDENCE")
    # hazards_only: everything outside the hazards' boxes is blurred before a frame is stored (passers-by's faces).
    privacy: Literal["full", "hazards_only"] = Field("hazards_only", validation_alias="UPLOAD_PRIVACY")
    # A confirmed hazard's frame is uploaded once; a later frame replaces it when this much more confident.
    best_frame_margin: float = Field(0.1, ge=0, le=1, validation_alias="UPLOAD_BEST_FRAME_MARGIN")
    # False: every confident frame, throttled by UPLOAD_MIN_INTERVAL_SECONDS.
    per_hazard: bool = Field(True, validation_alias="UPLOAD_PER_HAZARD")
    queue_size: int = Field(64, ge=1, validation_alias="UPLOAD_QUEUE_SIZE")
    # A camera at 15 fps sees the same pothole in many frames: one annotated upload per session per interval.
    min_interval_seconds: float = Field(1.0, ge=0, validation_alias="UPLOAD_MIN_INTERVAL_SECONDS")
    retry_base_seconds: float = Field(1.0, gt=0, validation_alias="UPLOAD_RETRY_BASE_SECONDS")
    retry_max_seconds: float = Field(60.0, gt=0, validation_alias="UPLOAD_RETRY_MAX_SECONDS")
    # Most uploads kept on disk for retry; beyond it new failures are dropped (counted), old ones are kept.
    spool_max_files: int = Field(1000, ge=1, validation_alias="SPOOL_MAX_FILES")
    # ... and most bytes of spooled frames (k8s gives the spool 1 GiB).
    spool_max_mb: int = Field(256, ge=1, validation_alias="SPOOL_MAX_MB")
    # The local store (no Cloudinary) removes its oldest frames past this many MiB (k8s gives it a 1 GiB emptyDir)
    # or this age (0: no age bound); their media URLs then answer 404.
    local_storage_max_mb: int = Field(512, ge=1, validation_alias="LOCAL_STORAGE_MAX_MB")
    local_storage_max_age_seconds: int = Field(86400, ge=0, validation_alias="LOCAL_STORAGE_MAX_AGE_SECONDS")
    # A queued upload settles (uploaded, spooled, dropped, failed) within this; unsettled past it, history says lost.
    settle_seconds: float = Field(120.0, gt=0, validation_alias="UPLOAD_SETTLE_SECONDS")
    # At shutdown, how long queued uploads may still try to land before they are left in the spool.
    flush_seconds: float = Field(5.0, ge=0, validation_alias="UPLOAD_FLUSH_SECONDS")

    @model_validator(mode="after")
    def _settle_after_one_attempt(self) -> UploadSettings:
        if self.settle_seconds < self.cloudinary_timeout_seconds + 5:
            # One upload attempt (bounded by the timeout) and the spooling after it must fit before it is called lost.
            raise ValueError("UPLOAD_SETTLE_SECONDS must exceed CLOUDINARY_TIMEOUT_SECONDS by at least 5 s")
        return self


class WorkerSettings(_Group):
    """Processes that work queued frames: hazard-worker, and the worker embedded in a local-mode API."""

    # An API in local mode also works batch frames, on capacity live ones leave.
    embedded: bool = Field(True, validation_alias="EMBEDDED_WORKER")
    # Batch frames one process works at once.
    batch_concurrency: int = Field(8, ge=1, validation_alias="WORKER_BATCH_CONCURRENCY")
    # Live frames a worker process takes at once (remote mode).
    live_concurrency: int = Field(8, ge=1, validation_alias="WORKER_LIVE_CONCURRENCY")
    # hazard-worker's /metrics; 0: none.
    metrics_port: int = Field(9101, ge=0, le=65535, validation_alias="WORKER_METRICS_PORT")
    # SIGTERM: how long the frames in hand may finish.
    shutdown_seconds: float = Field(10.0, ge=0, validation_alias="WORKER_SHUTDOWN_SECONDS")
    # How often a worker looks for frames of a dead worker.
    sweep_seconds: int = Field(2, ge=1, validation_alias="WORKER_SWEEP_SECONDS")


class JobSettings(_Group):
    """Batch jobs: the queue (SAQ), frame runs and retries, what is kept and for how long, the result cache,
    server-side ingestion."""

    # The queue and job state need one standalone Redis (pub/sub, blocking moves): REDIS_URL by default; required
    # with REDIS_MODE=cluster.
    queue_redis_url: str | None = Field(None, validation_alias="QUEUE_REDIS_URL")
    # One batch frame's run, queue wait excluded.
    frame_timeout_seconds: int = Field(30, ge=1, validation_alias="JOB_FRAME_TIMEOUT_SECONDS")
    frame_retries: int = Field(3, ge=1, validation_alias="JOB_FRAME_RETRIES")  # attempts per batch frame
    # A frame running this long untouched is a dead worker's: retried.
    heartbeat_seconds: int = Field(10, ge=1, validation_alias="JOB_HEARTBEAT_SECONDS")
    # Frame bytes wait for a worker at most this long.
    frame_ttl_seconds: int = Field(3600, ge=1, validation_alias="JOB_FRAME_TTL_SECONDS")
    # A job and its results, after its last change.
    result_ttl_seconds: int = Field(86400, ge=1, validation_alias="JOB_RESULT_TTL_SECONDS")
    # Frame bytes waiting, fleet-wide (429 past).
    pending_bytes_limit: int = Field(256 * 1024 * 1024, ge=1024, validation_alias="JOB_PENDING_BYTES_LIMIT")
    max_frames_per_request: int = Field(100, ge=1, validation_alias="JOB_MAX_FRAMES_PER_REQUEST")
    # One /jobs request's body, all frames together.
    request_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, validation_alias="JOB_REQUEST_MAX_BYTES")
    result_cache_ttl_seconds: int = Field(7 * 86400, ge=1, validation_alias="RESULT_CACHE_TTL_SECONDS")
    detect_cache: bool = Field(False, validation_alias="DETECT_CACHE")  # live frames consult the result cache too
    # POST /jobs/{id}/ingest-dir reads only below it; unset: off.
    ingest_root: Path | None = Field(None, validation_alias="INGEST_ROOT")
    ingest_max_files: int = Field(10_000, ge=1, validation_alias="INGEST_MAX_FILES")
    # How long one ingestion waits out backpressure.
    ingest_wait_seconds: float = Field(60.0, ge=0, validation_alias="INGEST_WAIT_SECONDS")


class AdminSettings(_Group):
    """Operators: the admin API and the control center."""

    # argon2, e.g. from `python -m app.entrypoints.hash_password`
    password_hash: SecretStr | None = Field(None, validation_alias="ADMIN_PASSWORD_HASH")
    password: SecretStr | None = Field(None, validation_alias="ADMIN_PASSWORD")  # plain: local development and tests
    # `Authorization: Bearer <ADMIN_TOKEN>` for machine clients
    token: SecretStr | None = Field(None, validation_alias="ADMIN_TOKEN")
    login_max_failures: int = Field(5, ge=1, validation_alias="ADMIN_LOGIN_MAX_FAILURES")
    login_window_seconds: int = Field(300, ge=1, validation_alias="ADMIN_LOGIN_WINDOW_SECONDS")
    # Control center logins: how long one lasts (no sliding), and the key that signs its cookie (unset: a random
    # key per process, so logins end with a restart and are not shared between replicas).
    session_hours: float = Field(8.0, gt=0, le=720, validation_alias="ADMIN_SESSION_HOURS")
    session_secret: SecretStr | None = Field(None, validation_alias="ADMIN_SESSION_SECRET")


class AuthSettings(_Group):
    """Who may call: API keys (`hzk_...`) carrying a tenant and scopes."""

    # off: anonymous callers are the tenant `local` (keys sent are still checked and applied); keys: every route but
    # the probes (and /metrics without METRICS_TOKEN) needs a key. Unset: keys when ENVIRONMENT=production, else off.
    mode: Literal["off", "keys"] | None = Field(None, validation_alias="AUTH_MODE")
    allow_off_in_production: bool = Field(False, validation_alias="AUTH_ALLOW_OFF_IN_PRODUCTION")
    # The HMAC-SHA-256 key of the stored key digests (at least 32 bytes), the same on every replica. Unset outside
    # production: generated once into API_KEY_PEPPER_FILE, so keys outlive a restart of `make run`.
    api_key_pepper: SecretStr | None = Field(None, validation_alias="API_KEY_PEPPER")
    api_key_pepper_file: Path = Field(Path("var/api-key-pepper"), validation_alias="API_KEY_PEPPER_FILE")
    # A verified key is believed this long in each process; a revocation reaches every replica within ~1 s anyway.
    api_key_cache_seconds: float = Field(5.0, ge=0, le=60, validation_alias="API_KEY_CACHE_SECONDS")
    # Failed key attempts per client address and minute before 429.
    key_failures_per_minute: int = Field(20, ge=1, validation_alias="API_KEY_FAILURES_PER_MINUTE")
    # Set: /metrics needs `Authorization: Bearer <METRICS_TOKEN>` (Prometheus' `authorization` config).
    metrics_token: SecretStr | None = Field(None, validation_alias="METRICS_TOKEN")
    # How long a signed /media URL (control center, map popups, exports) stays valid.
    media_url_seconds: int = Field(3600, ge=60, le=7 * 86400, validation_alias="MEDIA_URL_SECONDS")


class HttpSettings(_Group):
    """The front door (hazard-api / python -m app): what one process accepts, whatever its launcher's flags, and
    which proxies in front of it are believed about the client's address."""

    # Open connections; past it, idle ones are closed, then 503.
    max_connections: int = Field(1000, ge=1, validation_alias="HTTP_MAX_CONNECTIONS")
    # A connection's request headers must arrive within.
    header_timeout_seconds: float = Field(10.0, gt=0, validation_alias="HTTP_HEADER_TIMEOUT_SECONDS")
    # An idle keep-alive connection is closed after.
    keepalive_timeout_seconds: int = Field(5, ge=1, validation_alias="HTTP_KEEPALIVE_TIMEOUT_SECONDS")
    # A request's whole body must arrive within (408).
    body_timeout_seconds: float = Field(10.0, gt=0, validation_alias="REQUEST_BODY_TIMEOUT_SECONDS")
    # e.g. "x-forwarded-for": read only from TRUSTED_PROXIES
    client_address_header: str | None = Field(None, validation_alias="CLIENT_ADDRESS_HEADER")
    # Comma-separated addresses or CIDRs of the front proxies.
    trusted_proxies: str = Field("", validation_alias="TRUSTED_PROXIES")

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies_are_networks(cls, value: str) -> str:
        for entry in (part.strip() for part in value.split(",")):
            if entry:
                ipaddress.ip_network(entry, strict=False)  # ValueError names the entry
        return value


class StreamSettings(_Group):
    """Live frames over one WebSocket per session (`GET /sessions/{id}/stream`)."""

    # Frames of one stream in the engine at once; a newer frame replaces the one waiting behind them.
    window: int = Field(2, ge=1, le=64, validation_alias="STREAM_WINDOW")
    # One message (header and image); default: MAX_IMAGE_BYTES + 64 KiB. Past it the stream is closed with 1009.
    max_message_bytes: int | None = Field(None, ge=1024, validation_alias="STREAM_MAX_MESSAGE_BYTES")
    # A stream that sends no message for this long is closed (4408); pings keep a silent but live peer checked.
    idle_seconds: float = Field(60.0, gt=0, validation_alias="STREAM_IDLE_SECONDS")
    # Open streams one process holds; one more is refused (1013, try again later).
    max_per_process: int = Field(200, ge=1, validation_alias="STREAM_MAX_PER_PROCESS")
    # Open streams one API key holds in this process; one more is refused (4429). Anonymous callers (AUTH_MODE=off,
    # no key) have only the per-process limit.
    max_per_key: int = Field(8, ge=1, validation_alias="STREAM_MAX_PER_KEY")
    # An upgrade without a key (a browser cannot set headers on one) waits this long for a first text message
    # `{"type": "auth", "api_key": "hzk_..."}`; without one the stream is closed 4401 before any frame is read.
    auth_seconds: float = Field(5.0, gt=0, le=60, validation_alias="STREAM_AUTH_SECONDS")


class TelemetrySettings(_Group):
    """What the service tells about itself: logs, the deep health check, metrics."""

    log_level: LogLevel = Field("INFO", validation_alias="LOG_LEVEL")
    log_json: bool = Field(True, validation_alias="LOG_JSON")
    # One real inference per this many seconds, whoever asks.
    health_deep_cache_seconds: float = Field(5.0, ge=0, validation_alias="HEALTH_DEEP_CACHE_SECONDS")
    # The active-sessions gauge scans every session key: at most once per this many seconds (0: every scrape).
    active_sessions_refresh_seconds: float = Field(15.0, ge=0, validation_alias="ACTIVE_SESSIONS_REFRESH_SECONDS")

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_any_case(cls, value: object) -> object:
        # Anything that is not a level in some case is passed on as given, so the error shows what was set.
        if isinstance(value, str) and value.strip().upper() in get_args(LogLevel):
            return value.strip().upper()
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["local", "test", "production"] = "local"
    inference_mode: Literal["local", "remote"] = "local"  # remote: /detect goes through the queue to workers
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    breakers: BreakerSettings = Field(default_factory=BreakerSettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    uploads: UploadSettings = Field(default_factory=UploadSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    streams: StreamSettings = Field(default_factory=StreamSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Same order as pydantic-settings' own (arguments, environment, .env); no secrets directory is configured.
        assert isinstance(env_settings, EnvSettingsSource) and isinstance(dotenv_settings, DotEnvSettingsSource)
        return init_settings, _FlatVariables(settings_cls, env_settings), _FlatVariables(settings_cls, dotenv_settings)

    @model_validator(mode="before")
    @classmethod
    def _route_flat_names(cls, data: Any) -> Any:
        """`Settings(session_ttl_seconds=60)`, as before the groups: each flat name goes into its group, where it
        wins over what the environment put there (arguments come first, as for any setting)."""
        if not isinstance(data, dict):
            return data
        routed = {key: value for key, value in data.items() if key.upper() not in GROUPED_VARIABLES}
        for key, value in data.items():
            if (place := GROUPED_VARIABLES.get(key.upper())) is not None:
                group, field = place
                given = routed.get(group, {})
                values = given.model_dump(exclude_unset=True) if isinstance(given, BaseModel) else dict(given)
                routed[group] = {**values, field: value}
        return routed

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.environment == "production" and "url" not in self.redis.model_fields_set:
            # The local default would make every replica keep sessions in a Redis of its own.
            raise ValueError("REDIS_URL must be set explicitly when ENVIRONMENT=production")
        if self.environment == "production" and self.auth.mode == "off" and not self.auth.allow_off_in_production:
            raise ValueError("AUTH_MODE=off in production needs AUTH_ALLOW_OFF_IN_PRODUCTION=true: anyone could call")
        if self.environment == "production" and self.auth_mode == "keys" and self.auth.api_key_pepper is None:
            raise ValueError("API_KEY_PEPPER must be set when ENVIRONMENT=production (the same on every replica)")
        if self.redis.mode == "cluster" and self.jobs.queue_redis_url is None:
            raise ValueError("QUEUE_REDIS_URL must name a standalone Redis when REDIS_MODE=cluster")
        return self

    @property
    def auth_mode(self) -> Literal["off", "keys"]:
        """AUTH_MODE, or its default for the environment."""
        if self.auth.mode is not None:
            return self.auth.mode
        return "keys" if self.environment == "production" else "off"

    @property
    def queue_url(self) -> str:
        return self.jobs.queue_redis_url or self.redis.url

    @property
    def stream_max_message_bytes(self) -> int:
        """A stream message holds an image and its header: the image limit plus room for the header by default."""
        return self.streams.max_message_bytes or self.images.max_bytes + STREAM_HEADER_ALLOWANCE


def _groups() -> dict[str, type[_Group]]:
    return {
        name: field.annotation
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, _Group)
    }


_GROUPS = _groups()
# Environment variable -> (group, field): the table every flat name goes through.
GROUPED_VARIABLES: dict[str, tuple[str, str]] = {
    str(field.validation_alias): (group, name)
    for group, model in _GROUPS.items()
    for name, field in model.model_fields.items()
}
assert all(variable.isupper() for variable in GROUPED_VARIABLES), "every grouped field declares its variable"
# Every environment variable the settings read -> its field (default, constraints): for docs and deploy checks.
ENVIRONMENT_FIELDS: dict[str, FieldInfo] = {
    **{name.upper(): field for name, field in Settings.model_fields.items() if name not in _GROUPS},
    **{variable: _GROUPS[group].model_fields[name] for variable, (group, name) in GROUPED_VARIABLES.items()},
}
# Where each attribute of the flat settings went (`session_ttl_seconds` -> `sessions.ttl_seconds`).
FLAT_PATHS: dict[str, str] = {
    **{
        variable.lower(): ".".join(GROUPED_VARIABLES.get(variable, (variable.lower(),)))
        for variable in ENVIRONMENT_FIELDS
    },
    "queue_url": "queue_url",
}


class _FlatVariables(PydanticBaseSettingsSource):
    """The flat variables one pydantic-settings source found (environment or .env file), put in their groups."""

    def __init__(self, settings_cls: type[BaseSettings], source: EnvSettingsSource) -> None:
        super().__init__(settings_cls)
        self._source = source

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads every variable at once

    def __call__(self) -> dict[str, Any]:
        found = self._source.env_vars  # lower-cased names unless case_sensitive (never set here)
        values: dict[str, Any] = {}
        for variable in ENVIRONMENT_FIELDS:
            value = found.get(variable.lower())
            if value is None:
                continue
            place = GROUPED_VARIABLES.get(variable)
            if place is None:
                values[variable.lower()] = value
            else:
                values.setdefault(place[0], {})[place[1]] = value
        return values


class SettingsError(ValueError):
    """Settings that cannot be used; str() is one `configuration error: ...` line per problem, for operators."""


# Values never repeated in an error message: they can carry credentials.
_SECRET_VARIABLES = frozenset(
    {
        "REDIS_URL",
        "REGISTRY_URL",
        "QUEUE_REDIS_URL",
        "CLOUDINARY_URL",
        "ADMIN_PASSWORD_HASH",
        "ADMIN_PASSWORD",
        "ADMIN_TOKEN",
        "ADMIN_SESSION_SECRET",
        "API_KEY_PEPPER",
        "METRICS_TOKEN",
    }
)
_MAX_ECHOED_CHARS = 80
_VARIABLE_AT: dict[tuple[str, ...], str] = {place: variable for variable, place in GROUPED_VARIABLES.items()}


def _variable_of(loc: tuple[int | str, ...]) -> str | None:
    """The environment variable an error's location points at; None for a check across fields (all settings' or
    one group's), whose message already names the variables."""
    grouped = _VARIABLE_AT.get(tuple(str(part) for part in loc[:2]))
    if grouped is not None:
        return grouped
    top = str(loc[0]).upper() if loc else ""
    return top if top in ENVIRONMENT_FIELDS else None


def _literal_values(annotation: Any) -> list[object]:
    """The values a Literal accepts, also inside `Literal[...] | None`."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [value for member in get_args(annotation) for value in _literal_values(member)]


def _describe(error: ErrorDetails) -> str:
    variable = _variable_of(error["loc"])
    if variable is None:
        return error["msg"].removeprefix("Value error, ")
    reason = error["msg"][:1].lower() + error["msg"][1:]  # "Input should be a valid number, ..."
    if variable in _SECRET_VARIABLES:
        return f"{variable} is not valid: {reason}"
    given = repr(error["input"])  # repr: quoted, and a newline in a value cannot break the line
    given = given if len(given) <= _MAX_ECHOED_CHARS else given[: _MAX_ECHOED_CHARS - 3] + "..."
    accepted = _literal_values(ENVIRONMENT_FIELDS[variable].annotation)
    if error["type"] == "literal_error" and accepted:
        return f"{variable}={given} is not one of {', '.join(str(value) for value in accepted)}"
    return f"{variable}={given} is not valid: {reason}"


def load_settings() -> Settings:
    """Settings from the environment, for launchers: a bad value raises SettingsError naming the variable and
    what it accepts, instead of pydantic's multi-line report."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError("\n".join(f"configuration error: {_describe(error)}" for error in exc.errors())) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
