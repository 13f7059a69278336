"""The one settings object. Every field reads the environment variable of the same name, upper-cased."""

from __future__ import annotations

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
    model_performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"
    model_warmup_requests: int = Field(3, ge=0)
    model_max_concurrent: int | None = Field(None, ge=1, description="infer requests; default: OpenVINO's optimum")
    model_inference_threads: int | None = Field(None, ge=1, description="CPU threads for OpenVINO; default: all cores")
    max_request_queue_size: int = Field(100, ge=1)
    request_timeout_seconds: float = Field(1.0, gt=0)  # a live frame older than this is no longer worth an answer
    default_confidence: float = Field(0.25, ge=0, le=1)
    default_iou: float = Field(0.45, ge=0, le=1)
    default_max_detections: int = Field(100, ge=1, le=1000)

    # Image limits
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=1)

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
    # The active-sessions gauge scans every session key: at most once per this many seconds (0: every scrape).
    active_sessions_refresh_seconds: float = Field(15.0, ge=0)

    # Fleet: heartbeats, desired model state and commands in Redis
    fleet_name: str = Field("default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # deployments sharing a Redis
    fleet_heartbeat_seconds: float = Field(2.0, gt=0)
    fleet_poll_seconds: float = Field(0.5, gt=0)

    # Operators (admin API and control center)
    admin_password_hash: SecretStr | None = None  # argon2, e.g. from `python -m app.hash_password`
    admin_password: SecretStr | None = None  # plain: local development and tests only
    admin_token: SecretStr | None = None  # `Authorization: Bearer <ADMIN_TOKEN>` for machine clients
    admin_login_max_failures: int = Field(5, ge=1)
    admin_login_window_seconds: int = Field(300, ge=1)

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
    # At shutdown, how long queued uploads may still try to land before they are left in the spool.
    upload_flush_seconds: float = Field(5.0, ge=0)

    # Shutdown
    shutdown_drain_seconds: float = Field(10.0, ge=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_any_case(cls, value: object) -> object:
        # Anything that is not a level in some case is passed on as given, so the error shows what was set.
        if isinstance(value, str) and value.strip().upper() in get_args(LogLevel):
            return value.strip().upper()
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.session_ttl_seconds > self.session_max_ttl_seconds:
            raise ValueError("SESSION_TTL_SECONDS must not exceed SESSION_MAX_TTL_SECONDS")
        if self.environment == "production" and "redis_url" not in self.model_fields_set:
            # The local default would make every replica keep sessions in a Redis of its own.
            raise ValueError("REDIS_URL must be set explicitly when ENVIRONMENT=production")
        if self.redis_mode == "cluster" and urlsplit(self.redis_url).path.strip("/") not in ("", "0"):
            raise ValueError("REDIS_URL must name db 0 (or none) when REDIS_MODE=cluster: a cluster has only db 0")
        return self


class SettingsError(ValueError):
    """Settings that cannot be used; str() is one `configuration error: ...` line per problem, for operators."""


# Values never repeated in an error message: they can carry credentials.
_SECRET_FIELDS = frozenset({"redis_url", "cloudinary_url", "admin_password_hash", "admin_password", "admin_token"})
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
