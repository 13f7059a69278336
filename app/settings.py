"""The one settings object. Every field reads the environment variable of the same name, upper-cased."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["local", "test", "production"] = "local"
    log_level: LogLevel = "INFO"
    log_json: bool = True

    # Model and inference
    # The repository: every sub-folder holding an OpenVINO export is a version. MODEL_DIR's folder is the
    # version a fleet activates first (it is served even when it lies outside the repository).
    model_repository: Path = Path("models")
    model_dir: Path = Path("models/best0408_openvino_model")
    model_cache_dir: Path | None = Path("var/model-cache")  # OpenVINO's compiled-blob cache: fast re-loads
    model_memory_limit_mb: float = Field(1024.0, gt=0)  # a load that would push RSS past it is refused
    model_drain_seconds: float = Field(10.0, ge=0)  # how long an unloaded version may finish its frames
    model_device: str = "CPU"
    # Default: ADAPTIVE for an API (a frame alone on every core, overlapping frames on a stream each), THROUGHPUT for
    # a hazard-worker (a stream per core: the most frames per second).
    model_performance_hint: Literal["LATENCY", "THROUGHPUT", "ADAPTIVE"] | None = None
    # Default: OpenVINO's choice, bf16 on CPUs that have it (same detections, ~1.7x faster than f32). f32 makes a
    # fleet of mixed CPUs answer alike, and is needed where oneDNN's instruction set is capped (ONEDNN_MAX_CPU_ISA).
    model_inference_precision: Literal["f32", "bf16", "f16"] | None = None
    model_warmup_requests: int = Field(3, ge=0)
    model_max_concurrent: int | None = Field(None, ge=1, description="infer requests; default: OpenVINO's optimum")
    model_inference_threads: int | None = Field(None, ge=1, description="CPU threads for OpenVINO; default: all cores")
    max_request_queue_size: int = Field(100, ge=1)
    request_timeout_seconds: float = Field(1.0, gt=0)  # a live frame older than this is no longer worth an answer
    # A live frame the engine can expect to take longer than this to serve (its wait for the model plus its own
    # inference) is refused at once (503 OVERLOADED + Retry-After) instead of queued: under overload, the frames
    # accepted stay fast (P95 < 150 ms) and the rest learn it in milliseconds, not at their deadline.
    live_latency_budget_seconds: float = Field(0.1, gt=0)
    default_confidence: float = Field(0.25, ge=0, le=1)
    default_iou: float = Field(0.45, ge=0, le=1)
    default_max_detections: int = Field(100, ge=1, le=1000)

    # Image limits
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=1)
    # Pixels a frame may cost to decode, after JPEG's draft scaling toward the model input: PNG and WebP are
    # decoded whole, and a few bytes of lossless WebP can claim 40 MP (~0.9 s of CPU). 3840x2160 by default.
    max_decode_pixels: int = Field(3840 * 2160, ge=1)

    # Redis and sessions
    redis_url: str = "redis://127.0.0.1:6379/0"  # with REDIS_MODE=cluster: one seed node, db 0
    redis_mode: Literal["standalone", "cluster"] = "standalone"
    redis_socket_timeout_seconds: float = Field(0.5, gt=0)
    redis_max_connections: int = Field(64, ge=1)
    session_ttl_seconds: int = Field(3600, ge=1)
    session_max_ttl_seconds: int = Field(86400, ge=1)
    session_ended_grace_seconds: int = Field(300, ge=1)
    session_history_limit: int = Field(200, ge=1)
    session_rate_limit_per_second: float = Field(30.0, gt=0)
    session_rate_limit_burst: int = Field(60, ge=1)
    session_store_fail_open: bool = True
    # Client metadata of a session, checked before it is stored (422 VALIDATION_ERROR naming the limit).
    session_metadata_max_bytes: int = Field(4096, ge=2)  # its compact UTF-8 JSON
    session_metadata_max_depth: int = Field(8, ge=1)  # the metadata object itself is level 1
    session_metadata_max_keys: int = Field(64, ge=0)  # keys of every object in it, nested ones included
    pending_writes_limit: int = Field(10_000, ge=1)
    # Where kept writes are saved at shutdown (and read back at start); default: `<SPOOL_DIR>/pending-writes.jsonl`.
    pending_writes_file: Path | None = None
    # Session creation per client (peer address, or CLIENT_ADDRESS_HEADER from TRUSTED_PROXIES): a token bucket of
    # sessions, and a budget of TTL-seconds refilled over an hour (a 24 h session costs 24 default ones).
    session_create_rate_per_minute: float = Field(30.0, gt=0)
    session_create_burst: int = Field(60, ge=1)
    session_create_ttl_budget_seconds: int = Field(7 * 86400, ge=1)
    client_address_header: str | None = None  # e.g. "x-forwarded-for": read only from TRUSTED_PROXIES
    trusted_proxies: str = ""  # comma-separated addresses or CIDRs of the front proxies
    health_deep_cache_seconds: float = Field(5.0, ge=0)  # one real inference per this many seconds, whoever asks
    # The active-sessions gauge scans every session key: at most once per this many seconds (0: every scrape).
    active_sessions_refresh_seconds: float = Field(15.0, ge=0)

    # Fleet: heartbeats, desired model state and commands in Redis
    fleet_name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # deployments sharing a Redis
    fleet_heartbeat_seconds: float = Field(2.0, gt=0)
    fleet_poll_seconds: float = Field(0.5, gt=0)

    # Hazard tracking (per session) and the fleet's hazard map
    track_min_hits: int = Field(5, ge=1)  # frames before a track is a hazard (new_hazard: true on the last one)
    track_max_gap_seconds: float = Field(1.0, gt=0)  # a track unmatched for longer is closed
    track_iou_threshold: float = Field(0.2, gt=0, le=1)  # IoU of the expanded boxes to match a track
    track_box_expand: float = Field(0.25, ge=0, le=2)  # each side of both boxes grows by this fraction first
    hazard_merge_meters: float = Field(8.0, gt=0, le=1000)  # same class within this is one map hazard
    hazard_map_ttl_days: float = Field(30.0, gt=0)  # a map hazard with no new report for this long expires
    # A confirmed hazard's frame is uploaded once; a later frame replaces it when this much more confident.
    upload_best_frame_margin: float = Field(0.1, ge=0, le=1)
    upload_per_hazard: bool = True  # False: every confident frame, throttled by UPLOAD_MIN_INTERVAL_SECONDS

    # Batch jobs, the job queue (SAQ) and workers
    inference_mode: Literal["local", "remote"] = "local"  # remote: /detect goes through the queue to workers
    embedded_worker: bool = True  # an API in local mode also works batch frames, on capacity live ones leave
    # The queue and job state need one standalone Redis (pub/sub, blocking moves): REDIS_URL by default; required
    # with REDIS_MODE=cluster.
    queue_redis_url: str | None = None
    worker_batch_concurrency: int = Field(8, ge=1)  # batch frames one process works at once
    worker_live_concurrency: int = Field(8, ge=1)  # live frames a worker process takes at once (remote mode)
    worker_metrics_port: int = Field(9101, ge=0, le=65535)  # hazard-worker's /metrics; 0: none
    worker_shutdown_seconds: float = Field(10.0, ge=0)  # SIGTERM: how long the frames in hand may finish
    worker_sweep_seconds: int = Field(2, ge=1)  # how often a worker looks for frames of a dead worker
    job_frame_timeout_seconds: int = Field(30, ge=1)  # one batch frame's run, queue wait excluded
    job_frame_retries: int = Field(3, ge=1)  # attempts per batch frame
    job_heartbeat_seconds: int = Field(10, ge=1)  # a frame running this long untouched is a dead worker's: retried
    job_frame_ttl_seconds: int = Field(3600, ge=1)  # frame bytes wait for a worker at most this long
    job_result_ttl_seconds: int = Field(86400, ge=1)  # a job and its results, after its last change
    job_pending_bytes_limit: int = Field(256 * 1024 * 1024, ge=1024)  # frame bytes waiting, fleet-wide (429 past)
    job_max_frames_per_request: int = Field(100, ge=1)
    job_request_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)  # one /jobs request's body, all frames together
    result_cache_ttl_seconds: int = Field(7 * 86400, ge=1)
    detect_cache: bool = False  # live frames consult the result cache too
    ingest_root: Path | None = None  # POST /jobs/{id}/ingest-dir reads only below it; unset: off
    ingest_max_files: int = Field(10_000, ge=1)
    ingest_wait_seconds: float = Field(60.0, ge=0)  # how long one ingestion waits out backpressure

    # Operators (admin API and control center)
    admin_password_hash: SecretStr | None = None  # argon2, e.g. from `python -m app.entrypoints.hash_password`
    admin_password: SecretStr | None = None  # plain: local development and tests only
    admin_token: SecretStr | None = None  # `Authorization: Bearer <ADMIN_TOKEN>` for machine clients
    admin_login_max_failures: int = Field(5, ge=1)
    admin_login_window_seconds: int = Field(300, ge=1)
    # Control center logins: how long one lasts (no sliding), and the key that signs its cookie (unset: a random
    # key per process, so logins end with a restart and are not shared between replicas).
    admin_session_hours: float = Field(8.0, gt=0, le=720)
    admin_session_secret: SecretStr | None = None

    # Circuit breakers
    breaker_fail_max: int = Field(3, ge=1)
    breaker_reset_seconds: float = Field(5.0, gt=0)

    # Annotated uploads
    cloudinary_url: SecretStr | None = None
    cloudinary_timeout_seconds: float = Field(10.0, gt=0)
    storage_dir: Path = Path("var/uploads")
    spool_dir: Path = Path("var/spool")
    upload_min_confidence: float = Field(0.5, ge=0, le=1)
    upload_queue_size: int = Field(64, ge=1)
    # A camera at 15 fps sees the same pothole in many frames: one annotated upload per session per interval.
    upload_min_interval_seconds: float = Field(1.0, ge=0)
    upload_retry_base_seconds: float = Field(1.0, gt=0)
    upload_retry_max_seconds: float = Field(60.0, gt=0)
    # Most uploads kept on disk for retry; beyond it new failures are dropped (counted), old ones are kept.
    spool_max_files: int = Field(1000, ge=1)
    spool_max_mb: int = Field(256, ge=1)  # ... and most bytes of spooled frames (k8s gives the spool 1 GiB)
    # The local store (no Cloudinary) removes its oldest frames past this many MiB (k8s gives it a 1 GiB emptyDir)
    # or this age (0: no age bound); their media URLs then answer 404.
    local_storage_max_mb: int = Field(512, ge=1)
    local_storage_max_age_seconds: int = Field(86400, ge=0)
    # A queued upload settles (uploaded, spooled, dropped, failed) within this; unsettled past it, history says lost.
    upload_settle_seconds: float = Field(120.0, gt=0)
    # At shutdown, how long queued uploads may still try to land before they are left in the spool.
    upload_flush_seconds: float = Field(5.0, ge=0)

    # Shutdown
    shutdown_drain_seconds: float = Field(10.0, ge=0)

    # The front door (hazard-api / python -m app): what one process accepts, whatever its launcher's flags
    http_max_connections: int = Field(1000, ge=1)  # open connections; past it, idle ones are closed, then 503
    http_header_timeout_seconds: float = Field(10.0, gt=0)  # a connection's request headers must arrive within
    http_keepalive_timeout_seconds: int = Field(5, ge=1)  # an idle keep-alive connection is closed after
    request_body_timeout_seconds: float = Field(10.0, gt=0)  # a request's whole body must arrive within (408)

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_any_case(cls, value: object) -> object:
        # Anything that is not a level in some case is passed on as given, so the error shows what was set.
        if isinstance(value, str) and value.strip().upper() in get_args(LogLevel):
            return value.strip().upper()
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies_are_networks(cls, value: str) -> str:
        for entry in (part.strip() for part in value.split(",")):
            if entry:
                ipaddress.ip_network(entry, strict=False)  # ValueError names the entry
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.session_ttl_seconds > self.session_max_ttl_seconds:
            raise ValueError("SESSION_TTL_SECONDS must not exceed SESSION_MAX_TTL_SECONDS")
        if self.upload_settle_seconds < self.cloudinary_timeout_seconds + 5:
            # One upload attempt (bounded by the timeout) and the spooling after it must fit before it is called lost.
            raise ValueError("UPLOAD_SETTLE_SECONDS must exceed CLOUDINARY_TIMEOUT_SECONDS by at least 5 s")
        if self.environment == "production" and "redis_url" not in self.model_fields_set:
            # The local default would make every replica keep sessions in a Redis of its own.
            raise ValueError("REDIS_URL must be set explicitly when ENVIRONMENT=production")
        if self.redis_mode == "cluster" and urlsplit(self.redis_url).path.strip("/") not in ("", "0"):
            raise ValueError("REDIS_URL must name db 0 (or none) when REDIS_MODE=cluster: a cluster has only db 0")
        if self.redis_mode == "cluster" and self.queue_redis_url is None:
            raise ValueError("QUEUE_REDIS_URL must name a standalone Redis when REDIS_MODE=cluster")
        return self

    @property
    def queue_url(self) -> str:
        return self.queue_redis_url or self.redis_url


class SettingsError(ValueError):
    """Settings that cannot be used; str() is one `configuration error: ...` line per problem, for operators."""


# Values never repeated in an error message: they can carry credentials.
_SECRET_FIELDS = frozenset(
    {
        "redis_url",
        "queue_redis_url",
        "cloudinary_url",
        "admin_password_hash",
        "admin_password",
        "admin_token",
        "admin_session_secret",
    }
)
_MAX_ECHOED_CHARS = 80


def _describe(error: ErrorDetails) -> str:
    if not error["loc"]:  # a cross-field check: its message already names the variables
        return error["msg"].removeprefix("Value error, ")
    field = str(error["loc"][0])
    variable = field.upper()
    reason = error["msg"][:1].lower() + error["msg"][1:]  # "Input should be a valid number, ..."
    if field in _SECRET_FIELDS or field not in Settings.model_fields:
        return f"{variable} is not valid: {reason}"
    given = repr(error["input"])  # repr: quoted, and a newline in a value cannot break the line
    given = given if len(given) <= _MAX_ECHOED_CHARS else given[: _MAX_ECHOED_CHARS - 3] + "..."
    accepted = get_args(Settings.model_fields[field].annotation)
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
